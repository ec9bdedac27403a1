"""Logging set up once for the service and uvicorn: JSON lines in containers, text locally."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# uvicorn adds color_message for its own coloured console; the plain message says the same.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


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
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Each request is logged once by our middleware, with its id; uvicorn's copy would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
