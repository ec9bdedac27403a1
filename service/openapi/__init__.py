"""`/openapi.json`: every route described with the loaded model's real features and outputs.

The model is only known after start-up, so the document is built on first request. The native
`/predict` schemas come from the request validator itself (`service.spec`); KServe v1 and
the Open Inference Protocol reuse its per-feature schemas, so the three cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.openapi.common import AUTHORIZED
from service.openapi.native import describe_native
from service.openapi.protocols import describe_protocols

if TYPE_CHECKING:  # the runtime imports the protocols, which the docs describe
    from service.runtime import Runtime


def openapi_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        if runtime is None:
            return schema
        describe_native(schema, runtime)
        describe_protocols(schema, runtime)
        if runtime.keys.required:
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path in AUTHORIZED:
                for op in schema["paths"][path].values():
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema = schema
        return schema

    return build
