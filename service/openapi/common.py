"""What the OpenAPI document's parts share: the error answers, the keyed paths, small builders."""

from __future__ import annotations

import copy
from typing import Any

AUTH_ERROR = "missing or wrong API key (only when a key is configured)"
PREDICT_ERRORS = {
    "401": AUTH_ERROR,
    "413": "body over MAX_BODY_BYTES or batch over MAX_BATCH_SIZE",
    "415": "body is not declared as JSON",
    "422": "body does not match the schema, or the model's answer for an instance is not finite; "
    "`loc` is body, instances, index, field",
    "503": "model not loaded yet, or too many requests waiting (see Retry-After)",
}
PROTOCOL_ERRORS = {
    "400": "the request does not fit the protocol or the model's inputs; the message names "
    "the input (or instance) and the row",
    "401": AUTH_ERROR,
    "404": "no such model or version on this server",
    "413": "body over MAX_BODY_BYTES or more rows than MAX_BATCH_SIZE",
    "415": "body is neither JSON nor the binary extension's octet stream, or is compressed",
    "503": "model not loaded yet, or too many requests waiting (see Retry-After)",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"description": "a message, or a list of field errors for 422"}},
}
PROTOCOL_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
V2_INFER = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
V1_PREDICT = "/v1/models/{name}:predict"
V2_METADATA = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
# Readiness stays open (as /health/ready does); everything that shows or uses the model is keyed.
AUTHORIZED = ("/predict", "/model", *V2_METADATA, *V2_INFER, V1_PREDICT)


def flag(name: str) -> dict[str, Any]:
    return {"type": "object", "required": [name], "properties": {name: {"type": "boolean"}}}


def bare(schema: dict[str, Any]) -> dict[str, Any]:
    """A feature's value schema without the description written for the native instance."""
    value = copy.deepcopy(schema)
    value.pop("description", None)
    return value


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_ref("Error")}


def protocol_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_ref("ProtocolError")}


def json_ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
