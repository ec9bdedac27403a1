"""Logging set up once for the service and uvicorn: JSON lines in containers, text locally."""

from __future__ import annotations

import asyncio
import logging
import select
import sys
import threading
import time
from typing import Any, Final, cast

import orjson

# uvicorn adds color_message for its own coloured console; the plain message says the same.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload = _payload(record.created, record.levelname, record.name, record.getMessage())
        payload.update(_fields(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def _payload(created: float, level: str, logger: str, event: str) -> dict[str, Any]:
    """A JSON line's first keys; its fields follow."""
    seconds = int(created)
    if seconds != _second[0]:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    millis = int((created - seconds) * 1000)
    return {
        "ts": f"{_second[1]}.{millis:03d}Z",
        "level": level.lower(),
        "logger": logger,
        "event": event,
    }


_second: list[Any] = [None, ""]  # the last whole second stamped, and its text

# The longest a request line waits before it is written (see `JsonLineHandler`).
FLUSH_SECONDS: Final = 0.05
# POSIX writes this many bytes to a pipe whole, never mixed with another writer's.
ATOMIC_WRITE: Final = select.PIPE_BUF


class JsonLineHandler(logging.StreamHandler[Any]):
    """The service's handler in JSON format. Request lines (see `info_line`) wait up to
    FLUSH_SECONDS and go out together: a write and a flush per answer, or even per turn of the
    event loop, cost a one-row request at c=32 5-6% of its throughput. Any other record, and
    any flush (logging's own at exit too), writes them first, so lines keep their order. Each
    write holds whole lines and at most ATOMIC_WRITE bytes: the workers of a container share
    one stdout, and a longer write to a pipe may be interleaved with another process's."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._pending: list[tuple[str, int]] = []  # a line and its length in bytes
        # The loop a flush is due on: a loop that closed before its flush never blocks the next.
        self._flush_due_on: asyncio.AbstractEventLoop | None = None
        # logging's own lock for this handler (made by Handler.__init__; re-entrant).
        self._lock = cast(threading.RLock, self.lock)

    def defer(self, line: str, size: int) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append((line, size))
            if loop is not None and self._flush_due_on is not loop:
                loop.call_later(FLUSH_SECONDS, self.flush)
                self._flush_due_on = loop
        if loop is None:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._flush_due_on = None
            self._write_pending()
            try:
                super().flush()
            except Exception:
                self._report(None)

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:  # logging holds it already when it calls
            self._write_pending()
        super().emit(record)

    def _write_pending(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        chunk: list[str] = []
        size = 0
        for line, length in lines:
            if chunk and size + length > ATOMIC_WRITE:
                self._write(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += length
        self._write(chunk)

    def _write(self, lines: list[str]) -> None:
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            self._report(lines[0])

    def _report(self, line: str | None) -> None:
        """As logging reports a record it could not write: on stderr, never raised."""
        self.handleError(logging.makeLogRecord({"name": "service.request", "msg": line}))


# The service's own JSON handler, when that is how it logs (see `configure_logging`).
_json_handler: list[JsonLineHandler] = []


def info_line(logger: logging.Logger, event: str, fields: dict[str, Any]) -> None:
    """`logger.info(event, extra=fields)`, for the line every request writes. When the service's
    JSON handler is the only one it reaches, with no filter on the way, the line is handed
    straight to it: the same line, without a LogRecord and logging's dispatch, which were most
    of its cost, and written with the turn's other lines. Anything else (text format, a test's
    capture handler) takes logging's path."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _json_handler[0] if _json_handler else None
    if handler is None or not _only_reaches(logger, handler):
        logger.info(event, extra=fields)
        return
    payload = _payload(time.time(), "INFO", logger.name, event)
    payload.update(fields)
    line = orjson.dumps(payload, default=str)
    handler.defer(line.decode() + "\n", len(line) + 1)


def _only_reaches(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether an INFO record from `logger` would reach `handler` alone, unfiltered."""
    if handler.filters or handler.level > logging.INFO:
        return False
    current: logging.Logger | None = logger
    while current is not None:
        if current.disabled or current.filters:
            return False
        if current.handlers:
            return current.handlers == [handler] and current.parent is None
        if not current.propagate:
            return False
        current = current.parent
    return False


# Control characters (a path may carry %0a) are shown escaped, so no one can forge a log line.
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(32), 127]}


def _console_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or text != text.translate(_CONTROL):
        # Quoted and escaped as JSON: a value can neither break the line nor pose as a field.
        return orjson.dumps(text).decode()
    return text


class ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL message key=value ...`: one line per record, whatever the values hold."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={_console_value(v)}" for k, v in _fields(record).items())
        message = record.getMessage().translate(_CONTROL)
        line = f"{stamp} {record.levelname:<7} {message} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str, fmt: str) -> None:
    # The logging HOWTO's optimisations: no formatter here prints the caller's file and line,
    # thread or process, and finding the caller walks the stack on every request line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler: logging.StreamHandler[Any]
    if fmt == "json":
        handler = JsonLineHandler(sys.stdout)
        _json_handler[:] = [handler]
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(ConsoleFormatter())
        _json_handler[:] = []
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Each request is logged once by our middleware, with its id; uvicorn's copy would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
