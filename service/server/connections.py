"""Slow, greedy and stalled clients, handled where uvicorn reads and writes the bytes.

uvicorn bounds only the idle time between keep-alive requests. This protocol (uvicorn's own
httptools one, extended) also bounds:
- how long a client may take to send a request's headers (from its first byte, or from the
  connection for the first request) and its body: 408, then close, whatever was received;
- how large a request line (414) and its headers (431) may be, checked as the bytes arrive,
  before the parser has buffered more than a read's worth past the limit;
- how long a client may leave written bytes unread (WRITE_TIMEOUT): the connection is dropped;
- how many connections one process serves: past MAX_CONNECTIONS, requests other than the
  health probes get a 503 with Retry-After.
Every refusal is in the service's error shape, and the connection is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.errors import error_body
from service.server.stopping import is_stopping

PROBES = frozenset({b"/health/live", b"/health/ready", b"/v2/health/live", b"/v2/health/ready"})
# How long an idle connection stays open once the server is stopping (see `shutdown`).
DRAIN_SECONDS = 1.0
# Per header line, httptools hands over name and value without ": " and "\r\n".
_HEADER_OVERHEAD = 4
_TIMER_SLACK = 0.001


@dataclass
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    max_connections: int = 1000
    max_request_line: int = 8192
    max_header_bytes: int = 65536
    keepalive_timeout: float = 5.0


LIMITS = Limits()
# The state of the server this process runs (uvicorn's: its connections and request tasks), set
# by the first connection.
_SERVER: list[Any] = []


def configure(limits: Limits) -> None:
    """Set once per process, before it serves (each worker does it in its own start-up)."""
    for name, value in vars(limits).items():
        setattr(LIMITS, name, value)


def requests_in_flight() -> int | None:
    """HTTP requests this process has read and not yet answered (their tasks, begun or not);
    None before its server's first connection, and where no server of this module runs (an
    in-process test client). One server per process: the service runs no other."""
    return len(_SERVER[0].tasks) if _SERVER else None


def path_of(url: bytes) -> str:
    """The path of a URL as far as it was received (for the error's shape); never raises."""
    try:
        path: bytes = httptools.parse_url(url).path or b"/"
    except (httptools.HttpParserInvalidURLError, ValueError):
        path = url.split(b"?", 1)[0][:256] or b"/"
    return path.decode("latin-1")


class GuardedProtocol(HttpToolsProtocol):
    # The current phase's deadline (loop time), what it bounds and its length; None between a
    # message's end and the next one's first byte (uvicorn's keep-alive timeout bounds that).
    _deadline: float | None = None
    _deadline_what = ""
    _deadline_seconds = 0.0
    _timer: asyncio.TimerHandle | None = None  # due at or before `_deadline` (see `_arm`)
    _write_deadline: asyncio.TimerHandle | None = None
    _refused = False
    _reading_head = True  # between a message's end (or the connection) and its headers' end
    _head_bytes = 0  # bytes received while reading the current head (see data_received)
    _header_bytes = 0  # exact: the header lines parsed so far
    _completed = False  # a message ended in the chunk being parsed
    _draining = False  # the server is shutting down: answer what comes, then close

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not _SERVER:
            _SERVER.append(self.server_state)
        self._arm(LIMITS.header_timeout, "request headers")
        if is_stopping(self.server_state):  # made after the server's shutdown went through them
            self.shutdown()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._completed = False
        super().data_received(data)
        if self._refused or not self._reading_head:
            return
        # A header still being received is buffered inside httptools, which calls back only
        # once it is whole: so the bytes themselves are counted. A chunk in which a message
        # ended also holds bytes of that message: counting starts with the next one.
        self._head_bytes = 0 if self._completed else self._head_bytes + len(data)
        if self._head_bytes > LIMITS.max_request_line + LIMITS.max_header_bytes:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = self._header_bytes = 0
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(LIMITS.header_timeout, "request headers")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > LIMITS.max_request_line and not self._refused:
            self._refuse_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + _HEADER_OVERHEAD
        if self._header_bytes > LIMITS.max_header_bytes and not self._refused:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._reading_head = False
        if self._refused:
            return
        if len(self.connections) > LIMITS.max_connections:
            path = httptools.parse_url(self.url).path
            if path not in PROBES:
                self._refuse(
                    503,
                    "Service Unavailable",
                    path.decode("latin-1"),
                    "too many connections to this server; retry after a second",
                    retry=True,
                )
                return
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            if self._draining:
                cycle.keep_alive = False
            _guard(cycle)
            if not cycle.response_complete:
                self._arm(LIMITS.body_timeout, "request body")

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._completed = True
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._disarm_write()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping (SIGTERM, or a worker replaced on SIGHUP). uvicorn closes an
        idle keep-alive connection at once, under a client that may be sending its next
        request at that moment: that request would be lost. Here the client gets DRAIN_SECONDS
        to send one, which is answered with `Connection: close`; then the connection closes."""
        self._draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            min(DRAIN_SECONDS, LIMITS.keepalive_timeout), self.timeout_keep_alive_handler
        )

    # -- writing --------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The client stopped taking bytes: it has WRITE_TIMEOUT to take some again."""
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(LIMITS.write_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_write()

    def timeout_keep_alive_handler(self) -> None:
        # close() waits for unsent bytes, forever if the client never reads: drop them instead.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            super().timeout_keep_alive_handler()

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (an unknown method, a malformed line) gets a 400 in the
        service's shape too, rather than uvicorn's plain text."""
        url = getattr(self, "url", b"")
        self._refuse(400, "Bad Request", path_of(url[:1024]), "invalid HTTP request")

    def _stalled(self) -> None:
        self._write_deadline = None
        if not self.transport.is_closing() or self.transport.get_write_buffer_size():
            self.transport.abort()

    def _disarm_write(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    # -- deadlines and refusals -----------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        """Each request sets and clears two deadlines (its headers', its body's). Moving a
        deadline is an assignment; a timer is made only when none is due before the new one,
        and one due earlier looks again when it fires (`_expire`). A timer made and cancelled
        for each phase cost about 3.4 us a request."""
        at = self.loop.time() + seconds
        self._deadline, self._deadline_what, self._deadline_seconds = at, what, seconds
        timer = self._timer
        if timer is None or timer.when() > at:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(at, self._expire)

    def _disarm(self) -> None:
        self._deadline = None

    def _expire(self) -> None:
        self._timer = None
        at = self._deadline
        if at is None:
            return
        # The loop's timers may run up to a millisecond early: that counts as on time.
        if self.loop.time() < at - _TIMER_SLACK:
            self._timer = self.loop.call_at(at, self._expire)
            return
        self._deadline = None
        self._too_slow(self._deadline_what, self._deadline_seconds)

    def _too_slow(self, what: str, seconds: float) -> None:
        """408 and close, unless the app has begun answering (then only close)."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            url = getattr(self, "url", b"")  # set when a request's first bytes arrive
            detail = f"{what} not received within {seconds:g} s"
            self._refuse(408, "Request Timeout", path_of(url[:1024]), detail)
            return
        self.transport.close()

    def _refuse_head(self) -> None:
        """414 while the request line is still arriving, 431 once headers are; a head that
        follows an unfinished answer (pipelining) cannot be answered in order: dropped."""
        if self.cycle is not None and not self.cycle.response_complete:
            self._refused = True
            self.transport.abort()
            return
        path = path_of(self.url[:1024])
        if not self.headers and len(self.url) > LIMITS.max_request_line:
            limit = LIMITS.max_request_line
            detail = f"the request target is longer than MAX_REQUEST_LINE ({limit} bytes)"
            self._refuse(414, "URI Too Long", path, detail)
            return
        detail = (
            f"the request's headers are larger than MAX_HEADER_BYTES ({LIMITS.max_header_bytes} "
            "bytes)"
        )
        self._refuse(431, "Request Header Fields Too Large", path, detail)

    def _refuse(
        self, status: int, reason: str, path: str, detail: str, retry: bool = False
    ) -> None:
        """Answer in the service's error shape, with uvicorn's default headers (the date, the
        security headers), and close. Nothing more this connection sends is parsed."""
        self._refused = True
        self._disarm()
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


class GuardedCycle(RequestResponseCycle):
    """uvicorn's request cycle, changed in two ways:
    - its `send` raises ClientDisconnect once the client has gone (the request middleware
      counts it as 499), where uvicorn's own would write to a closed transport and fail with a
      RuntimeError (a 500 and a traceback in the log);
    - an answer of known length goes out in one write, its head with its body: uvicorn writes
      the head when the app starts the answer, and the body next, two system calls and two TCP
      segments where one does.

    A cycle becomes one by its class (see `on_headers_complete`): a `send` closure stored on
    the cycle would refer back to it, and every request would leave a reference cycle for the
    garbage collector (measured: a collection every 32 requests, ~5% of the time at c=32)."""

    held_head: bytes = b""  # an answer's head, until its body is written
    defaults: list[tuple[bytes, bytes]]  # the server's default headers (see `_guard`)

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if self.transport.is_closing() and kind == "http.response.body":
            self.disconnected = True
            raise ClientDisconnect
        transport = self.transport
        stand_in: _HeadCapture | _HeadFirst | None = None
        if kind == "http.response.start":
            stand_in = _HeadCapture(transport)
        elif self.held_head:
            stand_in = _HeadFirst(transport, self.held_head)
            self.held_head = b""
        if stand_in is not None:
            self.transport = stand_in  # type: ignore[assignment]
        try:
            await super().send(message)
        except RuntimeError:
            if not transport.is_closing():
                raise
            self.disconnected = True
            raise ClientDisconnect from None
        finally:
            self.transport = transport
        if stand_in is not None:
            stand_in.done(self)


def _guard(cycle: RequestResponseCycle) -> None:
    """Make `cycle` a GuardedCycle. The server's default headers (its date and the security
    headers) go into its answers' heads from lines rendered once a second (`_HeadCapture`),
    not checked and rendered one by one for every answer as uvicorn does (~2.5% of a one-row
    request's time at c=32)."""
    cycle.__class__ = GuardedCycle
    guarded = cast(GuardedCycle, cycle)
    guarded.defaults, guarded.default_headers = cycle.default_headers, _NO_HEADERS


_NO_HEADERS: list[tuple[bytes, bytes]] = []  # never changed: uvicorn adds to a copy


class _HeadCapture:
    """The transport while uvicorn writes an answer's head: the head is kept, not written."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head = b""

    def write(self, data: bytes) -> None:
        self.head += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def done(self, cycle: GuardedCycle) -> None:
        status_line, _, rest = self.head.partition(b"\r\n")
        head = b"".join((status_line, b"\r\n", _defaults(cycle.defaults), rest))
        if cycle.chunked_encoding:  # a streamed answer: its head now, its chunks as they come
            self.transport.write(head)
        else:
            cycle.held_head = head


_rendered: list[Any] = [None, b""]  # the server's default headers, and their lines


def _defaults(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The server's default headers (its date, then the security headers) as header lines,
    rendered again when the server changes them (its date, once a second)."""
    if headers is not _rendered[0]:
        _rendered[:] = [headers, b"".join(n + b": " + v + b"\r\n" for n, v in headers)]
    rendered: bytes = _rendered[1]
    return rendered


class _HeadFirst:
    """The transport while uvicorn writes an answer's body: its first write carries the head.
    An answer with no body written (to HEAD) gets its head alone, before any close."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, b""
        if head:
            self.transport.writelines((head, data))
        else:
            self.transport.write(data)

    def close(self) -> None:
        self.done(None)
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def done(self, cycle: GuardedCycle | None) -> None:
        if self.head:
            self.transport.write(self.head)
            self.head = b""
