"""HTTP routes: thin; they check, call the predictor and shape the answer."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.responses import Response

from service.errors import (
    InvalidBodyError,
    NotReadyError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    json_response,
)
from service.predictor import NonFinitePredictionError, Table
from service.runtime import Runtime
from service.schema import error_details, is_oversize_batch, non_finite_details

router = APIRouter()


def runtime_of(request: Request) -> Runtime:
    # Read straight from app state: a FastAPI dependency here would cost more than the lookup.
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReadyError("model not loaded yet")
    return runtime


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes, refusing early on Content-Length and again while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body larger than MAX_BODY_BYTES ({limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body larger than MAX_BODY_BYTES ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return  # clients that send no type still get their body parsed as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {media or 'empty'}"
        )


async def predict(request: Request) -> Response:
    """POST /predict, mounted as a plain Starlette route (see `mount_predict`)."""
    runtime = runtime_of(request)
    runtime.authorize(request.headers)
    check_content_type(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    try:
        payload: dict[str, Any] = runtime.validator.validate_json(body)
    except ValidationError as exc:
        if is_oversize_batch(exc):
            raise PayloadTooLargeError(
                f"batch larger than MAX_BATCH_SIZE ({runtime.settings.max_batch_size} instances)"
            ) from None
        raise InvalidBodyError(error_details(exc, runtime.nullable)) from None
    instances = payload["instances"]
    table = Table.from_instances(instances, runtime.predictor.feature_names)
    try:
        output = await runtime.run(table)
    except NonFinitePredictionError as exc:
        raise InvalidBodyError(non_finite_details(exc.rows)) from None
    predictions = runtime.predictor.shape(output)
    return Response(
        orjson.dumps({"model": runtime.model_ref, "predictions": predictions}),
        media_type="application/json",
    )


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
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None and runtime.drift is not None:
        runtime.drift.fold()  # the rows since the last fold, so the gauges are current
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
