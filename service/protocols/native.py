"""The service's own routes: `/predict`, `/model`, the probes and `/metrics`. Thin: they check,
call the runtime and shape the answer."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service import tracing
from service.errors import (
    InvalidBodyError,
    PayloadTooLargeError,
    json_response,
)
from service.protocols.http import (
    check_body_headers,
    decoded,
    read_body,
    runtime_of,
)
from service.runtimes.base import NonFinitePredictionError
from service.spec import BatchTooLargeError, InstancesError, non_finite_details

router = APIRouter()


async def predict(request: Request) -> Response:
    """POST /predict, mounted as a plain Starlette route (see `mount_predict`)."""
    runtime = runtime_of(request)
    runtime.authorize(request.headers)
    check_body_headers(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    try:
        with tracing.span("decode"):
            table = await decoded(body, runtime.validator.table_from_json)
    except BatchTooLargeError:
        raise PayloadTooLargeError(
            f"batch larger than MAX_BATCH_SIZE ({runtime.settings.max_batch_size} instances)"
        ) from None
    except InstancesError as exc:
        raise InvalidBodyError(exc.details) from None
    try:
        output = await runtime.run(table)
    except NonFinitePredictionError as exc:
        raise InvalidBodyError(non_finite_details(exc.rows)) from None
    with tracing.span("encode"):
        predictions = runtime.predictor.shape(output)
        body = orjson.dumps({"model": runtime.model_ref, "predictions": predictions})
    return Response(body, media_type="application/json")


async def probe_options(request: Request) -> Response:
    """Load balancers probe with HEAD (every GET route answers it, see the request middleware)
    and sometimes OPTIONS."""
    return Response(status_code=204, headers={"allow": "GET, HEAD, OPTIONS"})


def mount_probe_options(app: FastAPI, paths: list[str]) -> None:
    for path in paths:
        app.router.add_route(path, probe_options, methods=["OPTIONS"], include_in_schema=False)


def mount_predict(app: FastAPI) -> None:
    """The hot path skips FastAPI's per-request dependency solving (it takes only the Request,
    and measured about a tenth of a request's cost); its OpenAPI entry is written by the app."""
    app.router.add_route("/predict", predict, methods=["POST"], include_in_schema=False)


@router.get("/model", summary="Metadata of the loaded model version", response_class=Response)
async def model(request: Request) -> Response:
    runtime = runtime_of(request)
    runtime.authorize(request.headers)
    return Response(runtime.metadata_json, media_type="application/json")


@router.get("/health/live", summary="200 while the process runs")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health/ready", summary="200 once a verified model is loaded, 503 before")
async def ready(request: Request) -> Response:
    runtime = runtime_of(request)
    body = {"status": "ready", "model": runtime.model_ref, "runtime": runtime.predictor.runtime}
    return json_response(200, body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    runtime = getattr(state, "runtime", None)
    if runtime is not None and runtime.drift is not None:
        runtime.drift.fold()  # the rows since the last fold, so the gauges are current
    # Rendered in a thread, one render at a time: scrapes that arrive meanwhile share it, so
    # neither a slow render nor many scrapers hold the event loop.
    pending: asyncio.Future[bytes] | None = getattr(state, "scrape", None)
    if pending is None or pending.done():
        pending = state.scrape = asyncio.ensure_future(run_in_threadpool(state.metrics.exposition))
    body = await asyncio.shield(pending)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
