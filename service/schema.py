"""The request contract, built once at start-up from the artifact's feature schema.

The validator is a pydantic TypeAdapter over TypedDicts: pydantic-core parses and checks the
raw JSON bytes in one pass and hands back plain dicts, with no model instances to build and no
second validation of the response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from modelstore import Feature, Metadata

FiniteNumber = Annotated[float, Strict(), Field(allow_inf_nan=False)]
# Bounded so every accepted integer converts to a float without overflow inside the model.
Integer = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]
Boolean = Annotated[bool, Strict()]
_FORBID = ConfigDict(extra="forbid")
MAX_REPORTED_ERRORS = 50


def _typed_dict(name: str, fields: dict[str, Any]) -> Any:
    """A TypedDict made at run time (so mypy cannot see it) that forbids unknown keys."""
    factory: Any = TypedDict
    made = factory(name, fields)
    made.__pydantic_config__ = _FORBID
    return made


def feature_type(feature: Feature) -> Any:
    base: Any
    if feature.type == "number":
        base = FiniteNumber
    elif feature.type == "integer":
        base = Integer
    elif feature.type == "boolean":
        base = Boolean
    else:
        base = Literal[tuple(feature.categories or ())]
    return base | None if feature.nullable else base


def instance_type(metadata: Metadata) -> Any:
    return _typed_dict("Instance", {f.name: feature_type(f) for f in metadata.features})


def request_adapter(metadata: Metadata, max_batch_size: int) -> TypeAdapter[Any]:
    instance = instance_type(metadata)
    batch = Annotated[list[instance], Field(min_length=1, max_length=max_batch_size)]  # type: ignore[valid-type]
    request = _typed_dict("PredictRequest", {"instances": batch})
    return TypeAdapter(request)


def is_oversize_batch(exc: ValidationError) -> bool:
    return any(e["type"] == "too_long" and e["loc"] == ("instances",) for e in exc.errors())


def error_details(exc: ValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 shape, with `loc` as body, instances, index, field; never the input."""
    details = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        details.append({"type": error["type"], "loc": ["body", *error["loc"]], "msg": error["msg"]})
        if len(details) == MAX_REPORTED_ERRORS:
            break
    return details


def openapi_components(
    metadata: Metadata, adapter: TypeAdapter[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body and response schemas for `POST /predict`, for `/openapi.json`."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    instance = components["Instance"]
    instance["description"] = f"One row of features for {metadata.name} v{metadata.version}."
    instance["examples"] = [metadata.example]
    for feature in metadata.features:
        prop = instance["properties"][feature.name]
        prop["description"] = f"{feature.type}{', may be null' if feature.nullable else ''}"
    schema["examples"] = [{"instances": [metadata.example]}]
    components["PredictRequest"] = schema
    if metadata.task == "classification":
        prediction = {
            "type": "object",
            "required": ["label", "probabilities"],
            "properties": {
                "label": {"description": "the most probable class"},
                "probabilities": {
                    "type": "object",
                    "description": "probability of each class",
                    "properties": {str(c): {"type": "number"} for c in metadata.classes or []},
                },
            },
        }
    else:
        prediction = {
            "type": "object",
            "required": ["value"],
            "properties": {"value": {"type": "number"}},
        }
    components["Prediction"] = prediction
    components["PredictResponse"] = {
        "type": "object",
        "required": ["model", "predictions"],
        "properties": {
            "model": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
            },
            "predictions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Prediction"},
                "description": "one per instance, in request order",
            },
        },
    }
    return schema, components
