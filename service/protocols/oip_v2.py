"""The Open Inference Protocol v2 over REST (with the binary tensor extension): the routes.

The same model, validation, dispatcher, key, limits and metrics as `/predict`; only the
envelope differs (`service.protocols.v2_model` turns tensors into rows and back). Errors are
`{"error": "..."}`. Readiness stays open like `/health/ready`; metadata and inference need the
key when one is set.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from service import __version__, tracing
from service.errors import BadRequestError, PayloadTooLargeError
from service.protocols.http import (
    check_body_headers,
    decoded,
    read_body,
    run_checked,
    runtime_of,
    served,
)
from service.protocols.v2_tensors import TensorError
from service.spec import BatchTooLargeError

router = APIRouter()
SERVER_NAME = "sklearn-serve"
EXTENSIONS = ["binary_tensor_data"]


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
        with tracing.span("decode"):
            parsed, table = await decoded(body, partial(model.decode, header_length=header_length))
    except TensorError as exc:
        raise BadRequestError(str(exc)) from None
    except BatchTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from None
    output = await run_checked(runtime, table)
    header: dict[str, Any] = {
        "model_name": runtime.model_ref["name"],
        "model_version": str(runtime.model_ref["version"]),
    }
    if parsed.id is not None:
        header["id"] = parsed.id
    with tracing.span("encode"):
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


def mount(app: FastAPI) -> None:
    """The GET routes come documented from the router; the POSTs are plain routes (see
    `native.mount_predict`) whose OpenAPI entries the app writes from the model's schema."""
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
