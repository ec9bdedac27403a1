"""KServe v1 (`/v1/models/{name}[:predict]`): instances in, labels or values out, as KServe's
sklearn server answers. The same validation, key, limits and metrics as `/predict`; errors are
`{"error": "..."}`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from service import tracing
from service.errors import BadRequestError, PayloadTooLargeError, json_response
from service.protocols.http import (
    check_body_headers,
    decoded,
    read_body,
    run_checked,
    served,
)
from service.runtime import Runtime
from service.runtimes.base import Table
from service.spec import BatchTooLargeError, InstancesError

router = APIRouter()


class _ModelName(Convertor[str]):
    """A model name never holds a colon, so `/v1/models/x:predict` is not model `x:predict`:
    each of the two v1 paths then answers OPTIONS with its own Allow header."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_name", _ModelName())


@router.get("/v1/models/{name:model_name}", summary="KServe v1: the model's name and readiness")
async def v1_model(request: Request) -> dict[str, Any]:
    runtime = served(request)
    return {"name": runtime.model_ref["name"], "ready": True}


async def predict(request: Request) -> Response:
    """POST /v1/models/{name}:predict with {"instances": [...]}: objects, or lists in feature
    order. The predictions are labels or values, as KServe's sklearn server answers."""
    runtime = served(request)
    runtime.authorize(request.headers)
    check_body_headers(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
    with tracing.span("decode"):
        table = await decoded(body, partial(_checked_table, runtime))
    output = await run_checked(runtime, table)
    with tracing.span("encode"):
        return json_response(200, {"predictions": labels_or_values(runtime, output)})


def _checked_table(runtime: Runtime, body: bytes) -> Table:
    """The body's instances, objects or lists in feature order, checked as /predict's."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the request is not valid JSON: {exc}") from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list):
        raise BadRequestError('the request must be {"instances": [...]}')
    names = runtime.predictor.feature_names
    as_objects = [_as_object(item, index, names) for index, item in enumerate(instances)]
    try:
        return runtime.validator.table_from_python({"instances": as_objects})
    except BatchTooLargeError:
        raise PayloadTooLargeError(
            f"{len(instances)} instances is more than MAX_BATCH_SIZE "
            f"({runtime.settings.max_batch_size})"
        ) from None
    except InstancesError as exc:
        raise BadRequestError(error_text(exc.details)) from None


def _as_object(item: Any, index: int, names: list[str]) -> Any:
    if not isinstance(item, list):
        return item  # an object, or something the validator will name
    if len(item) != len(names):
        raise BadRequestError(
            f"instances[{index}] has {len(item)} values but the model has {len(names)} "
            f"features, in this order: {', '.join(names)}"
        )
    return dict(zip(names, item, strict=True))


def error_text(details: list[dict[str, Any]]) -> str:
    """The native 422 details as one line: `instances[3].bill_length_mm: message; ...`."""
    parts = []
    for detail in details[:10]:
        loc = detail["loc"][1:]  # without "body"
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        parts.append(f"{path}: {detail['msg']}" if path else detail["msg"])
    more = len(details) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def labels_or_values(runtime: Runtime, output: np.ndarray[Any, Any]) -> list[Any]:
    """What the pipeline's own `predict` answers: a class per row, or a value."""
    if not runtime.predictor.is_classifier:
        values: list[Any] = output.tolist()
        return values
    classes = runtime.predictor.classes
    return [classes[i] for i in output.argmax(axis=1).tolist()]


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.router.add_route(
        "/v1/models/{name}:predict", predict, methods=["POST"], include_in_schema=False
    )
