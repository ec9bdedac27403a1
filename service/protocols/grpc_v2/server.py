"""The Open Inference Protocol over gRPC, in the server's own process and event loop.

`GRPC_PORT` (8001 by default, as Triton; 0 turns it off) on the same host as HTTP. Every call
takes the REST routes' path: the same key (`authorization: Bearer` or `x-api-key` metadata),
limits (MAX_BODY_BYTES per message, MAX_BATCH_SIZE rows, MAX_HEADER_BYTES of metadata),
feature spec and dispatcher, a request id (`x-request-id` metadata, echoed in the trailing
metadata), one log line and the metrics `grpc_server_handled` and
`grpc_server_handling_seconds` by method and code. Errors are status codes with the REST
message; an unexpected one is INTERNAL with no detail. grpcio's standard health service answers
Kubernetes' gRPC probes. Each worker binds the port with SO_REUSEPORT (gRPC's default on Linux),
so WORKERS > 1 shares it as HTTP's port is shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.datastructures import Headers

from service import __version__, tracing
from service.errors import (
    BadRequestError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceError,
)
from service.metrics import Metrics
from service.payloads import CURRENT_REQUEST
from service.protocols.grpc_v2 import oip_pb2 as pb
from service.protocols.grpc_v2 import oip_pb2_grpc
from service.protocols.grpc_v2.messages import infer_request, infer_response
from service.protocols.http import run_checked, serving
from service.protocols.oip_v2 import EXTENSIONS, SERVER_NAME
from service.protocols.v2_tensors import TensorError
from service.runtime import Runtime
from service.server.middleware import request_id
from service.settings import Settings
from service.spec import BatchTooLargeError

log = logging.getLogger("service.grpc")
T = TypeVar("T")
SERVICE = "inference.GRPCInferenceService"
# An HTTP status's gRPC code: the same fault answers alike on either protocol.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


class InferenceService(oip_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: Any, metrics: Metrics) -> None:
        self.state = state  # the app's state: the runtime appears on it once loaded
        self.metrics = metrics

    # -- the calls ------------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return await self._call("ServerLive", context, _live)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        async def ready() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=getattr(self.state, "runtime", None) is not None)

        return await self._call("ServerReady", context, ready)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        async def ready() -> pb.ModelReadyResponse:
            self._served(request.name, request.version)
            return pb.ModelReadyResponse(ready=True)

        return await self._call("ModelReady", context, ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        async def metadata() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(
                name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
            )

        return await self._call("ServerMetadata", context, metadata)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        async def metadata() -> pb.ModelMetadataResponse:
            runtime = self._served(request.name, request.version)
            runtime.authorize(_headers(context))
            described = runtime.tensors.metadata_response()
            return pb.ModelMetadataResponse(
                name=described["name"],
                versions=described["versions"],
                platform=described["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["inputs"]],
                outputs=[
                    pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["outputs"]
                ],
            )

        return await self._call("ModelMetadata", context, metadata)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        async def infer() -> pb.ModelInferResponse:
            runtime = self._served(request.model_name, request.model_version)
            runtime.authorize(_headers(context))
            model = runtime.tensors
            try:
                with tracing.span("decode"):
                    parsed = infer_request(request)
                    model.check_requested(parsed.outputs)
                    table = model.table(parsed.inputs)
            except TensorError as exc:
                raise BadRequestError(str(exc)) from None
            except BatchTooLargeError as exc:
                raise PayloadTooLargeError(str(exc)) from None
            output = await run_checked(runtime, table)
            with tracing.span("encode"):
                header = pb.ModelInferResponse(
                    model_name=runtime.model_ref["name"],
                    model_version=str(runtime.model_ref["version"]),
                    id=parsed.id or "",
                )
                raw = parsed.binary_default  # raw inputs in, raw outputs back
                return infer_response(header, model.outputs(output, parsed.outputs), raw)

        return await self._call("ModelInfer", context, infer)

    # -- what every call shares -----------------------------------------------------------------

    async def _call(self, method: str, context: Any, handler: Callable[[], Awaitable[T]]) -> T:
        if tracing.enabled():
            carrier = [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
            with tracing.server_span(f"{SERVICE}/{method}", carrier):
                return await self._traced(method, context, handler)
        return await self._traced(method, context, handler)

    async def _traced(self, method: str, context: Any, handler: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        offered = dict(context.invocation_metadata() or ()).get("x-request-id")
        rid = request_id(offered if isinstance(offered, str) else None)
        CURRENT_REQUEST.set((rid, f"/{SERVICE}/{method}"))
        context.set_trailing_metadata((("x-request-id", rid),))
        code, message = grpc.StatusCode.OK, ""
        try:
            return await handler()
        except ServiceError as exc:
            code = _CODES.get(exc.status, grpc.StatusCode.INTERNAL)
            message = str(exc.detail)
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid, "grpc_method": method})
            code, message = grpc.StatusCode.INTERNAL, "internal server error"
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_call(method, code.name, seconds)
            if tracing.enabled():
                tracing.annotate(
                    rpc__system="grpc",
                    rpc__service=SERVICE,
                    rpc__method=method,
                    rpc__grpc__status_code=code.value[0],
                    request__id=rid,
                    outcome="ok"
                    if code is grpc.StatusCode.OK
                    else "refused"
                    if code is not grpc.StatusCode.INTERNAL
                    else "error",
                )
            log.info(
                "grpc request",
                extra={
                    "request_id": rid,
                    "grpc_method": method,
                    "grpc_code": code.name,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
        await context.abort(code, message, trailing_metadata=(("x-request-id", rid),))
        raise AssertionError("context.abort raises")  # for the type checker

    def _served(self, name: str, version: str) -> Runtime:
        runtime: Runtime | None = getattr(self.state, "runtime", None)
        if runtime is None:
            raise NotReadyError("model not loaded yet")
        # Cut as REST's request line cuts a path: no model name or version is this long, and
        # the refusal quotes what was sent.
        return serving(runtime, name[:100], version[:40])


async def _live() -> pb.ServerLiveResponse:
    return pb.ServerLiveResponse(live=True)


def _headers(context: Any) -> Headers:
    """The call's metadata as the HTTP headers the key check reads (binary values left out)."""
    raw = [
        (key.encode("latin-1"), value.encode("latin-1"))
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    ]
    return Headers(raw=raw)


async def start(settings: Settings, state: Any, metrics: Metrics) -> Callable[[], Awaitable[None]]:
    """Serve on GRPC_PORT; returns the stop, which lets calls in flight finish within
    SHUTDOWN_TIMEOUT. A port that cannot be bound stops the start-up, as HTTP's does."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.so_reuseport", 1),
        ],
        maximum_concurrent_rpcs=settings.max_connections,
    )
    oip_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        InferenceService(state, metrics), server
    )
    health_service = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {exc}") from None
    await server.start()
    for name in ("", SERVICE):
        await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc listening", extra={"address": address})

    async def stop() -> None:
        for name in ("", SERVICE):
            await health_service.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(settings.shutdown_timeout)

    return stop
