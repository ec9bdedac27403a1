"""What every route shares: the runtime, the model a path names, and what a request body may be
(one rule for all).

JSON (UTF-8, as RFC 8259 requires), uncompressed, at most MAX_BODY_BYTES; the Open Inference
Protocol routes also take the binary tensor extension's octet stream with its
`Inference-Header-Content-Length`.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from service.errors import (
    BadRequestError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from service.protocols.v2_tensors import HEADER_LENGTH
from service.runtime import Runtime
from service.runtimes.base import NonFinitePredictionError, Table

T = TypeVar("T")

_HEADER_LENGTH = HEADER_LENGTH.encode()
_UTF8 = frozenset({"utf-8", "utf8"})


def check_body_headers(request: Request, binary: bool = False) -> str | None:
    """415 for a compressed body, another media type or a charset other than UTF-8. Returns
    the Inference-Header-Content-Length, if sent (only where `binary` allows it). One pass over
    the raw headers: this runs on every prediction, and each `Headers.get` is a scan."""
    content_type = encoding = header_length = None
    for key, value in request.scope["headers"]:
        if key == b"content-type":
            content_type = value.decode("latin-1")
        elif key == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
        elif key == _HEADER_LENGTH and binary:
            header_length = value.decode("latin-1").strip()
    if encoding not in (None, "", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding[:40]} is not supported: send the body uncompressed"
        )
    if content_type is None:
        return header_length  # clients that send no type still get their body read as JSON
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if binary and media == "application/octet-stream":
        return header_length
    if media != "application/json" and not media.endswith("+json"):
        wanted = "application/json"
        if binary:
            wanted += " (or application/octet-stream with Inference-Header-Content-Length)"
        raise UnsupportedMediaTypeError(
            f"Content-Type must be {wanted}, not {media[:80] or 'empty'}"
        )
    for parameter in parameters.split(";"):
        name, _, charset = parameter.partition("=")
        charset = charset.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in _UTF8:
            raise UnsupportedMediaTypeError(
                f"charset {charset[:40] or 'empty'} is not supported: JSON is read as UTF-8"
            )
    return header_length


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes, refusing early on Content-Length and again while streaming.
    Read from the ASGI messages themselves: Starlette's header map and body stream cost a
    one-row prediction ~8 us (~7%) more, measured."""
    for key, value in request.scope["headers"]:
        if key == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLargeError(f"body larger than MAX_BODY_BYTES ({limit} bytes)")
            break
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body larger than MAX_BODY_BYTES ({limit} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def runtime_of(request: Request) -> Runtime:
    # Read straight from app state: a FastAPI dependency here would cost more than the lookup.
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReadyError("model not loaded yet")
    return runtime


def served(request: Request, check_version: bool = True) -> Runtime:
    """The runtime, when the path names the model this server serves; 404 otherwise."""
    params = request.path_params
    version = params.get("version") if check_version else None
    return serving(runtime_of(request), params.get("name"), version)


def serving(runtime: Runtime, name: str | None, version: str | None) -> Runtime:
    """The runtime, when `name` (and `version`, if given) is the model it serves: REST's paths
    and gRPC's messages name models alike."""
    ref = runtime.model_ref
    if name != ref["name"]:
        raise NotFoundError(f"unknown model '{name}': this server serves '{ref['name']}'")
    if version and version != str(ref["version"]):
        raise NotFoundError(
            f"unknown version '{version}' of model '{ref['name']}': "
            f"this server serves version {ref['version']}"
        )
    return runtime


async def run_checked(runtime: Runtime, table: Table) -> Any:
    """The model's answer, or 400 for rows it overflows on (the protocols' way to say so)."""
    try:
        return await runtime.run(table)
    except NonFinitePredictionError as exc:
        rows = ", ".join(map(str, exc.rows[:20]))
        raise BadRequestError(
            f"rows {rows}: the model's prediction is not a finite number; "
            "the values are beyond what the model can handle"
        ) from None


# Past this size a body's parse builds thousands of containers: the collector is paused.
_LARGE_BODY = 16_384
# Past this size (~2-3 ms to parse and check) the body is decoded off the loop. Below it, the
# hand-over to a thread cost 100-row requests (~80 KB) 15-25% of their throughput.
_OFF_LOOP_BODY = 262_144
# One thread: bodies past that size are decoded one after another, so the loop shares the
# interpreter with one busy thread at a time, not one per waiting request.
_DECODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")


async def decoded(body: bytes, decode: Callable[[bytes], T]) -> T:
    """`decode(body)`, on the loop for a small body and on the decoding thread for a large one.
    Parsing and checking a 1 MB body holds the interpreter for ~10 ms, and a few in flight
    queued every other connection (and the liveness probe) behind them; off the loop, the loop
    waits at most the interpreter's switch interval or one C call."""
    if len(body) <= _LARGE_BODY:
        return decode(body)
    if len(body) <= _OFF_LOOP_BODY:
        with _COLLECTOR.paused():
            return decode(body)
    call = contextvars.copy_context().run  # the request's id and trace go along
    return await asyncio.get_running_loop().run_in_executor(_DECODER, call, _paused, decode, body)


def _paused(decode: Callable[[bytes], T], body: bytes) -> T:
    with _COLLECTOR.paused():
        return decode(body)


class _CollectorPause:
    """The garbage collector paused while any large body is being decoded, on the loop or the
    decoding thread. Building thousands of containers at once triggers collections that scan
    every one of them again and again (a full one took 30-40 ms during the hostile run, on top
    of the parse); the parsed objects hold no cycles and are freed by reference counting.
    Counted, so one decode's end never resumes the collector under another's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()  # paused by whoever runs us: theirs to resume
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._resume:
                    gc.enable()


_COLLECTOR = _CollectorPause()
