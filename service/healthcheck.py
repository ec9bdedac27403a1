"""`python -m service.healthcheck`: the image's HEALTHCHECK (slim images have no curl).

Docker runs it every couple of seconds for the life of the container, so it imports only
`socket` (urllib pulls in http, email and ssl) and speaks just enough HTTP/1.0 to read a status.
"""

import os
import socket
import sys


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /health/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n", 1)[0]
    except (OSError, ValueError):
        return 1
    return 0 if status_line.split(b" ")[1:2] == [b"200"] else 1


if __name__ == "__main__":
    sys.exit(main())
