"""The request log line: written straight to the service's JSON handler when nothing else
listens, through logging otherwise, and the same line either way."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from service import logs
from service.logs import configure_logging, info_line

FIELDS = {"request_id": "abc", "method": "POST", "path": "/a\nb", "status": 200, "ms": 0.5}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """configure_logging's handler, writing to a buffer; logging restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logs._json_handler[:])
    buffer = io.StringIO()
    yield buffer
    root.handlers[:], logs._json_handler[:] = saved[0], saved[2]
    root.setLevel(saved[1])


def configured(fmt: str, level: str, buffer: io.StringIO) -> logging.Handler:
    configure_logging(level, fmt)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    return handler


def test_the_direct_line_is_the_line_logging_writes(stream: io.StringIO) -> None:
    configured("json", "info", stream)
    logger = logging.getLogger("service.request")
    info_line(logger, "request", FIELDS)
    logger.info("request", extra=FIELDS)
    direct, through_logging = (json.loads(line) for line in stream.getvalue().splitlines())
    for line in (direct, through_logging):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("ts"))
    assert direct == through_logging
    assert direct == {"level": "info", "logger": "service.request", "event": "request", **FIELDS}
    assert stream.getvalue().count("\n") == 2  # the path's newline stays escaped


def test_another_handler_gets_the_line_through_logging(
    stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    configured("json", "info", stream)
    logging.getLogger().addHandler(caplog.handler)  # as a log shipper or a test would
    info_line(logging.getLogger("service.request"), "request", FIELDS)
    (record,) = [r for r in caplog.records if r.name == "service.request"]
    assert record.getMessage() == "request"
    assert record.__dict__["status"] == 200
    assert json.loads(stream.getvalue())["request_id"] == "abc"


@pytest.mark.parametrize(("fmt", "level", "written"), [("json", "warning", 0), ("text", "info", 1)])
def test_level_and_text_format_are_logging_s(
    stream: io.StringIO, fmt: str, level: str, written: int
) -> None:
    configured(fmt, level, stream)
    info_line(logging.getLogger("service.request"), "request", FIELDS)
    lines = stream.getvalue().splitlines()
    assert len(lines) == written
    if written:
        assert "request request_id=abc" in lines[0]
        assert 'path="/a\\nb"' in lines[0]


def test_a_failed_write_is_reported_by_logging_not_raised(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = configured("json", "info", stream)
    stream.close()
    info_line(logging.getLogger("service.request"), "request", FIELDS)  # must not raise
    assert "Logging error" in capsys.readouterr().err
    handler.setStream(io.StringIO())


class RecordedWrites(io.StringIO):
    """Each write the handler makes, as it made it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def after_the_flush_is_due() -> None:
    await asyncio.sleep(logs.FLUSH_SECONDS * 3)


def test_request_lines_wait_for_the_flush_and_go_out_in_one_write(stream: io.StringIO) -> None:
    recorded = RecordedWrites()
    configured("json", "info", recorded)
    logger = logging.getLogger("service.request")

    async def lines() -> tuple[str, str]:
        for n in range(3):
            info_line(logger, "request", {**FIELDS, "n": n})
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        during = recorded.getvalue()
        await after_the_flush_is_due()
        return during, recorded.getvalue()

    during, after = asyncio.run(lines())
    print(f"\nbefore the flush: {len(during)} characters; after it: {after.count(chr(10))} lines")
    assert during == ""
    assert [json.loads(line)["n"] for line in after.splitlines()] == [0, 1, 2]
    assert len(recorded.writes) == 1


def test_each_write_is_whole_lines_a_pipe_takes_at_once(stream: io.StringIO) -> None:
    """Workers share stdout: a write longer than PIPE_BUF could be cut by another's."""
    recorded = RecordedWrites()
    configured("json", "info", recorded)
    logger = logging.getLogger("service.request")

    async def many() -> None:
        for n in range(300):  # ~50 KB: the lines of a busy flush interval
            info_line(logger, "request", {**FIELDS, "n": n, "path": "/é" * (n % 40)})
        await after_the_flush_is_due()

    asyncio.run(many())
    sizes = [len(write.encode()) for write in recorded.writes]
    print(f"\n300 lines in {len(sizes)} writes of {min(sizes)}-{max(sizes)} bytes")
    assert all(size <= logs.ATOMIC_WRITE for size in sizes)
    assert all(write.endswith("\n") for write in recorded.writes)
    numbers = [json.loads(line)["n"] for line in recorded.getvalue().splitlines()]
    assert numbers == list(range(300))
    assert len(sizes) < 30


def test_a_loop_closed_before_its_flush_does_not_hold_the_next_loop_s_lines(
    stream: io.StringIO,
) -> None:
    configured("json", "info", stream)
    logger = logging.getLogger("service.request")

    async def one(n: int, wait: bool) -> None:
        info_line(logger, "request", {**FIELDS, "n": n})
        if wait:
            await after_the_flush_is_due()

    asyncio.run(one(1, wait=False))  # its loop ends with the flush still due
    asyncio.run(one(2, wait=True))
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == [1, 2]


def test_a_record_through_logging_writes_the_waiting_lines_first(stream: io.StringIO) -> None:
    configured("json", "info", stream)
    logger = logging.getLogger("service.request")

    async def turn() -> list[str]:
        info_line(logger, "request", FIELDS)
        logging.getLogger("service").warning("after the request line")
        return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]

    assert asyncio.run(turn()) == ["request", "after the request line"]


def test_a_failed_write_at_the_flush_is_reported_not_raised(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = configured("json", "info", stream)
    stream.close()

    async def turn() -> None:
        info_line(logging.getLogger("service.request"), "request", FIELDS)
        await after_the_flush_is_due()

    asyncio.run(turn())  # must not raise, nor leave the loop a failed callback
    err = capsys.readouterr().err
    assert "Logging error" in err
    assert "Exception in callback" not in err
    handler.setStream(io.StringIO())
