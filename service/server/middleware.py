"""Per-request plumbing as plain ASGI: request id, one log line, metrics, last-resort 500."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import tracing
from service.errors import error_body
from service.logs import info_line
from service.metrics import Metrics
from service.payloads import CURRENT_REQUEST

log = logging.getLogger("service.request")
_ids = random.Random()  # noqa: S311  (request ids correlate logs; they guard nothing)
_PLAIN_ROUTES: dict[Any, str] = {}
_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_INTERNAL_ERROR = "internal server error"
_SHUTTING_DOWN = "server shutting down: the request was cut at the shutdown deadline"
# Methods the routes answer; any other is one label value, so a client cannot mint series.
_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS"})
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
# nginx's code for a client that closed the connection before the answer: not a server error.
CLIENT_CLOSED = 499


class RequestContext:
    """Written as raw ASGI rather than BaseHTTPMiddleware, which costs a task per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if tracing.enabled():
            carrier = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in scope["headers"]
                if k in _TRACE_HEADERS
            ]
            with tracing.server_span(f"{scope['method']} {scope['path'][:100]}", carrier):
                await self._handle(scope, receive, send)
            return
        await self._handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            # `/model/` is `/model`: answered here rather than redirected, since a redirect
            # would be built from the client's Host header.
            scope["path"] = path = path.rstrip("/") or "/"
        request_id = _request_id(scope)
        CURRENT_REQUEST.set((request_id, path))
        method: str = scope["method"]
        if method == "HEAD":
            # HEAD is GET without the body (uvicorn drops it, reading its own scope's method):
            # every GET route answers it, the probes load balancers send included.
            scope = {**scope, "method": "GET"}
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = CLIENT_CLOSED
            log.info("client disconnected before the answer", extra={"request_id": request_id})
        except asyncio.CancelledError:
            # uvicorn cancels what is still running at the end of SHUTDOWN_TIMEOUT. Answer in
            # our own shape and end quietly: re-raising would make uvicorn log a traceback.
            status = 503
            if not response_started:
                await _send_error(send, id_header, 503, path, _SHUTTING_DOWN, close=True)
        except Exception:
            # Full detail goes to the log only; the client learns nothing about internals.
            log.exception("unhandled error", extra={"request_id": request_id})
            status = 500
            if not response_started:
                await _send_error(send, id_header, 500, path, _INTERNAL_ERROR)
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope)
            label = method if method in _METHODS else "other"
            self.metrics.observe_request(label, route, status, seconds)
            if tracing.enabled():
                tracing.rename(f"{label} {route}")
                tracing.annotate(
                    http__request__method=label,
                    http__route=route,
                    http__response__status_code=status,
                    request__id=request_id,
                    outcome="ok" if status < 400 else "refused" if status < 500 else "error",
                )
            info_line(
                log,
                "request",
                {
                    "request_id": request_id,
                    "method": method[:16],
                    "path": path[:256],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return request_id(value.decode("latin-1"))
    return request_id(None)


def request_id(offered: str | None) -> str:
    """The client's request id when it is a plain token (HTTP's X-Request-ID, gRPC's
    x-request-id metadata), else a new one."""
    if offered is not None and _GOOD_ID.match(offered):
        return offered
    # 128 random bits from the process's Mersenne Twister (seeded from os.urandom): unique
    # enough to correlate log lines, and without a system call per request as uuid4 makes.
    return f"{_ids.getrandbits(128):032x}"


def _route(scope: Scope) -> str:
    """The route template, so metrics never get one label per URL someone made up."""
    route: Any = scope.get("route")
    if route is not None:
        path: str = route.path
        return path
    # Plain Starlette routes (/predict, the docs) set only the endpoint: find the route that
    # owns it once, then remember it.
    endpoint, app = scope.get("endpoint"), scope.get("app")
    if endpoint is None or app is None:
        return "unmatched"
    known = _PLAIN_ROUTES.get(endpoint)
    if known is None:
        for candidate in getattr(app, "routes", ()):
            if getattr(candidate, "endpoint", None) is endpoint:
                known = _PLAIN_ROUTES[endpoint] = candidate.path
                break
    return known or "unmatched"


async def _send_error(
    send: Send,
    id_header: tuple[bytes, bytes],
    status: int,
    path: str,
    detail: str,
    close: bool = False,
) -> None:
    """In the shape of the protocol the path belongs to, as every other error."""
    body = orjson.dumps(error_body(path, detail))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        id_header,
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
