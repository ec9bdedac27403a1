"""Slow and greedy clients, handled where uvicorn reads the bytes.

uvicorn bounds only the idle time between keep-alive requests. This protocol (uvicorn's own
httptools one, extended) also bounds how long a client may take to send a request's headers
(from its first byte, or from the connection for the first request) and its body, and how many
connections one process serves: past MAX_CONNECTIONS, requests other than the health probes
get a 503 with Retry-After in the service's error shape, and the connection is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_body

PROBES = frozenset({b"/health/live", b"/health/ready", b"/v2/health/live", b"/v2/health/ready"})


@dataclass
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000


LIMITS = Limits()


def configure(header_timeout: float, body_timeout: float, max_connections: int) -> None:
    """Set once per process, before it serves (each worker does it in its own start-up)."""
    LIMITS.header_timeout = header_timeout
    LIMITS.body_timeout = body_timeout
    LIMITS.max_connections = max_connections


class GuardedProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(LIMITS.header_timeout, "request headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(LIMITS.header_timeout, "request headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        path = httptools.parse_url(self.url).path
        if len(self.connections) > LIMITS.max_connections and path not in PROBES:
            self._refuse(
                503,
                "Service Unavailable",
                path.decode("latin-1"),
                "too many connections to this server; retry after a second",
                retry=True,
            )
            return
        super().on_headers_complete()
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm(LIMITS.body_timeout, "request body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, what: str, seconds: float) -> None:
        """408 and close, unless the app has begun answering (then only close)."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            url = getattr(self, "url", b"")  # set when a request's first bytes arrive
            path = httptools.parse_url(url).path.decode("latin-1") if url else "/"
            detail = f"{what} not received within {seconds:g} s"
            self._refuse(408, "Request Timeout", path, detail, retry=False)
            return
        self.transport.close()

    def _refuse(self, status: int, reason: str, path: str, detail: str, retry: bool) -> None:
        """Answer in the service's error shape, with uvicorn's default headers (the date, the
        security headers), and close."""
        body = orjson.dumps(error_body(path, detail))
        head = [f"HTTP/1.1 {status} {reason}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"connection: close",
        ]
        if retry:
            head.append(b"retry-after: 1")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
