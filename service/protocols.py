"""KServe v1 and the Open Inference Protocol v2 (REST, with the binary tensor extension).

The same model, validation, dispatcher, key, limits and metrics as `/predict`; only the
envelope differs. Errors are `{"error": "..."}` (see `service.errors.error_body`). Readiness
routes stay open like `/health/ready`; metadata and inference need the key when one is set.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from service import __version__
from service.bodies import check_body_headers, read_body
from service.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    json_response,
)
from service.predictor import NonFinitePredictionError, Table
from service.routes import runtime_of
from service.runtime import Runtime
from service.schema import BatchTooLargeError, InstancesError
from service.tensors import HEADER_LENGTH, TensorError

router = APIRouter()
SERVER_NAME = "sklearn-serve"
EXTENSIONS = ["binary_tensor_data"]
_OPEN_MEDIA = ("application/json", "application/octet-stream")
_HEADER_LENGTH = HEADER_LENGTH.encode()


def served(request: Request, check_version: bool = True) -> Runtime:
    """The runtime, when the path names the model this server serves; 404 otherwise."""
    runtime = runtime_of(request)
    params = request.path_params
    ref = runtime.model_ref
    if params.get("name") != ref["name"]:
        raise NotFoundError(
            f"unknown model '{params.get('name')}': this server serves '{ref['name']}'"
        )
    version = params.get("version")
    if check_version and version is not None and version != str(ref["version"]):
        raise NotFoundError(
            f"unknown version '{version}' of model '{ref['name']}': "
            f"this server serves version {ref['version']}"
        )
    return runtime


# -- Open Inference Protocol v2 -------------------------------------------------------------


@router.get("/v2", summary="OIP v2: server name, version and extensions")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


@router.get("/v2/health/live", summary="OIP v2: 200 while the process runs")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="OIP v2: 200 once the model is loaded, 503 before")
async def server_ready(request: Request) -> dict[str, bool]:
    runtime_of(request)
    return {"ready": True}


@router.get("/v2/models/{name}", summary="OIP v2: the model's inputs and outputs")
@router.get(
    "/v2/models/{name}/versions/{version}", summary="OIP v2: the model's inputs and outputs"
)
async def model_metadata(request: Request) -> Response:
    runtime = served(request)
    runtime.authorize(request.headers)
    return Response(runtime.tensor_metadata_json, media_type="application/json")


@router.get("/v2/models/{name}/ready", summary="OIP v2: 200 when the model is ready")
@router.get(
    "/v2/models/{name}/versions/{version}/ready", summary="OIP v2: 200 when the model is ready"
)
async def model_ready(request: Request) -> dict[str, Any]:
    runtime = served(request)
    return {"name": runtime.model_ref["name"], "ready": True}


async def infer(request: Request) -> Response:
    """POST /v2/models/{name}[/versions/{version}]/infer, a plain route as /predict is."""
    runtime = served(request)
    runtime.authorize(request.headers)
    header_length = check_body_headers(request, binary=True)
    body = await read_body(request, runtime.settings.max_body_bytes)
    model = runtime.tensors
    try:
        parsed, table = model.decode(body, header_length)
    except TensorError as exc:
        raise BadRequestError(str(exc)) from None
    except BatchTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from None
    output = await _run(runtime, table)
    header: dict[str, Any] = {
        "model_name": runtime.model_ref["name"],
        "model_version": str(runtime.model_ref["version"]),
    }
    if parsed.id is not None:
        header["id"] = parsed.id
    content, json_length = model.answer(header, output, parsed.outputs, parsed.binary_default)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )


async def infer_version(request: Request) -> Response:
    """The same, under its own endpoint so metrics label the two paths apart."""
    return await infer(request)


async def _run(runtime: Runtime, table: Table) -> Any:
    try:
        return await runtime.run(table)
    except NonFinitePredictionError as exc:
        rows = ", ".join(map(str, exc.rows[:20]))
        raise BadRequestError(
            f"rows {rows}: the model's prediction is not a finite number; "
            "the values are beyond what the model can handle"
        ) from None


# -- KServe v1 ------------------------------------------------------------------------------


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


async def v1_predict(request: Request) -> Response:
    """POST /v1/models/{name}:predict with {"instances": [...]}: objects, or lists in feature
    order. The predictions are labels or values, as KServe's sklearn server answers."""
    runtime = served(request)
    runtime.authorize(request.headers)
    check_body_headers(request)
    body = await read_body(request, runtime.settings.max_body_bytes)
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
        checked = runtime.validator.validate_python({"instances": as_objects})
    except BatchTooLargeError:
        raise PayloadTooLargeError(
            f"{len(instances)} instances is more than MAX_BATCH_SIZE "
            f"({runtime.settings.max_batch_size})"
        ) from None
    except InstancesError as exc:
        raise BadRequestError(error_text(exc.details)) from None
    output = await _run(runtime, Table.from_instances(checked, names))
    return json_response(200, {"predictions": runtime.tensors.labels_or_values(output)})


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


def mount_protocol_routes(app: FastAPI) -> None:
    """The GET routes come documented from the router; the POSTs are plain routes (see
    `routes.mount_predict`) whose OpenAPI entries the app writes from the model's schema."""
    app.include_router(router)
    app.router.add_route(
        "/v2/models/{name}/infer", infer, methods=["POST"], include_in_schema=False
    )
    app.router.add_route(
        "/v2/models/{name}/versions/{version}/infer",
        infer_version,
        methods=["POST"],
        include_in_schema=False,
    )
    app.router.add_route(
        "/v1/models/{name}:predict", v1_predict, methods=["POST"], include_in_schema=False
    )
