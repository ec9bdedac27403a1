"""A real uvicorn server with the service's protocol, run in this process on a thread: for
tests that need to see inside the server (its loop's ticks, the garbage it leaves)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from uvicorn.server import Server


def start_in_thread(server: Server) -> threading.Thread:
    """`server` running on a daemon thread, once it has started (30 s at most)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start in 30 s"
        time.sleep(0.02)
    return thread


def predict_request(example: dict[str, Any]) -> bytes:
    """A keep-alive `POST /predict` of one instance, as raw bytes."""
    body = json.dumps({"instances": [example]}).encode()
    return (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
