"""The app factory and its lifespan: nothing happens at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_client import multiprocess
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp

from modelstore import LoadedModel
from service import __version__, tracing
from service.docs import mount_docs
from service.errors import ServiceError, handle_http_exception, handle_service_error
from service.loading import installed, load_model
from service.logs import configure_logging
from service.metrics import Metrics, multiprocess_dir
from service.openapi import openapi_builder
from service.protocols import kserve_v1, oip_v2
from service.protocols.native import mount_predict, mount_probe_options, router
from service.runtime import Runtime
from service.server.connections import PROBES, Limits
from service.server.connections import configure as configure_connections
from service.server.hot_lane import HotLane
from service.server.middleware import RequestContext
from service.settings import Settings, load_settings

log = logging.getLogger("service")
VERSION = __version__
PREDICTION_PATHS = frozenset(
    {
        "/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v1/models/{name}:predict",
    }
)


def create_app(settings: Settings | None = None, model: LoadedModel | None = None) -> FastAPI:
    """Build the app; the lifespan loads and verifies the model unless one is passed in."""
    settings = settings or load_settings()
    configure_connections(
        Limits(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            write_timeout=settings.write_timeout,
            max_connections=settings.max_connections,
            max_request_line=settings.max_request_line,
            max_header_bytes=settings.max_header_bytes,
            keepalive_timeout=settings.keepalive_timeout,
        )
    )
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model if model is not None else await run_in_threadpool(load_model, settings)
        runtime = await run_in_threadpool(Runtime.build, settings, loaded, metrics)
        app.state.runtime = runtime
        # Everything built so far lives as long as the process: keep it out of the collector's
        # scans, which otherwise walk the model's objects on every full collection.
        gc.collect()
        gc.freeze()
        metrics.model_info.labels(**runtime.model_ref, runtime=runtime.predictor.runtime).set(1)
        log.info(
            "model ready",
            extra={
                "model": runtime.model_ref["name"],
                "version": runtime.model_ref["version"],
                "runtime": runtime.predictor.runtime,
                "path": str(loaded.ref.path),
                "predict_ms": round(runtime.predictor.fixed_cost * 1000, 3),
            },
        )
        tracing.start(VERSION)
        hangup = _on_sighup(runtime.keys.reload)
        stop_grpc = await _start_grpc(settings, app.state, metrics)
        yield
        if stop_grpc is not None:
            await stop_grpc()
        hangup()
        runtime.dispatcher.close()
        await run_in_threadpool(tracing.stop)
        if runtime.payloads is not None:
            await run_in_threadpool(runtime.payloads.close)
        if model is None and loaded.hold is not None:
            loaded.hold.close()  # this lifespan loaded it; a passed-in model is the caller's
        if multiprocess_dir():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        log.info("stopped")

    app = ServiceApp(
        title="scikit-learn model service",
        version=VERSION,
        description="Predictions from one verified, versioned scikit-learn model.",
        lifespan=lifespan,
        # Our own docs page (service.docs) replaces FastAPI's, which loads Swagger UI from a CDN
        # with an inline script; ReDoc has no offline copy here, so it is off.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # FastAPI's OpenTelemetry hooks look up providers (and the environment) on every
        # request even when nothing is exported; our metrics and logs are our own.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.metrics = metrics
    app.include_router(router)
    mount_predict(app)
    oip_v2.mount(app)
    kserve_v1.mount(app)
    mount_docs(app)
    mount_probe_options(app, sorted(p.decode() for p in PROBES))
    # Trailing slashes are dropped by the request middleware: never a redirect built from Host.
    app.router.redirect_slashes = False
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
    app.add_middleware(RequestContext, metrics=metrics)
    app.openapi = openapi_builder(app)  # type: ignore[method-assign]
    return app


class ServiceApp(FastAPI):
    """FastAPI with the prediction routes in a lane of their own (see `server.hot_lane`)."""

    def build_middleware_stack(self) -> ASGIApp:
        routes = [
            r
            for r in self.router.routes
            if isinstance(r, Route) and r.path in PREDICTION_PATHS and r.methods == {"POST"}
        ]
        return HotLane(self, super().build_middleware_stack(), routes, self.state.metrics)


def create_worker_app() -> FastAPI:
    """Factory for each uvicorn worker process (WORKERS > 1): set up logging, then the app."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the lifespan takes it (see main)
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


async def _start_grpc(
    settings: Settings, state: Any, metrics: Metrics
) -> Callable[[], Awaitable[None]] | None:
    """The gRPC endpoint beside HTTP, where the image has grpcio (the -grpc tag) and
    GRPC_PORT is not 0."""
    if not settings.grpc_port:
        return None
    if not installed("grpc"):
        log.info(
            "grpc off: grpcio is not installed here (the -grpc image has it)",
            extra={"grpc_port": settings.grpc_port},
        )
        return None
    from service.protocols.grpc_v2.server import start

    return await start(settings, state, metrics)


def _on_sighup(action: Callable[[], None]) -> Callable[[], None]:
    """Run `action` on SIGHUP (re-reading the key file); returns the undo.

    Only a main thread's loop can take signals, so an app run in a test client's thread does
    without. With WORKERS > 1, SIGHUP goes to uvicorn's supervisor, which replaces the workers
    one by one, each reading the file as it starts (one that cannot keeps the old worker).
    """
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, action)
    except (RuntimeError, ValueError, NotImplementedError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo
