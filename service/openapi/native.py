"""The native `/predict` route's part of the document: its request schema is the validator's
own (the feature spec's value types), so the docs cannot promise what the route refuses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from modelstore import Metadata, class_key
from service.features import FeatureSpec
from service.openapi.common import AUTH_ERROR, ERROR_SCHEMA, PREDICT_ERRORS, error, json_ref

if TYPE_CHECKING:  # the runtime imports the protocols, which the docs describe
    from service.runtime import Runtime


def docs_example(metadata: Metadata) -> dict[str, Any]:
    """The instance shown in the docs: typical values, never a real training row.

    Format 1 metadata recorded a training row as its example, so for those versions the example
    is made from the schema alone.
    """
    if metadata.example_is_typical:
        return dict(metadata.example)
    placeholder = {"number": 0.0, "integer": 0, "boolean": False}
    return {
        f.name: (f.categories or [""])[0] if f.type == "string" else placeholder[f.type]
        for f in metadata.features
    }


def label_schema(metadata: Metadata) -> dict[str, Any]:
    classes = metadata.classes or []
    json_types = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kinds = sorted({json_types[type(c)] for c in classes})
    kind: Any = kinds[0] if len(kinds) == 1 else kinds
    return {"type": kind, "enum": classes, "description": "the most probable class"}


def openapi_components(
    spec: FeatureSpec, adapter: TypeAdapter[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body and response schemas for `POST /predict`, for `/openapi.json`."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    instance = components["Instance"]
    metadata = spec.metadata
    instance["description"] = f"One row of features for {metadata.name} v{metadata.version}."
    example = docs_example(metadata)
    instance["examples"] = [example]
    for rule in spec.rules:
        prop = instance["properties"][rule.name]
        prop["description"] = f"{rule.type}{', may be null' if rule.nullable else ''}"
        if rule.accept_unknown:
            seen = ", ".join(rule.categories)
            prop["description"] += (
                f"; seen in training: {seen}; any other text is accepted and encoded as an "
                "unseen category (UNKNOWN_CATEGORIES=accept)"
            )
    for name in metadata.ignored_columns:
        instance["properties"][name]["description"] = "not used by the model: accepted, ignored"
    schema["examples"] = [{"instances": [example]}]
    components["PredictRequest"] = schema
    if metadata.task == "classification":
        prediction = {
            "type": "object",
            "required": ["label", "probabilities"],
            "properties": {
                "label": label_schema(metadata),
                "probabilities": {
                    "type": "object",
                    "description": "probability of each class, keyed by the class as JSON text "
                    '(true/false for a boolean target, 3 as the key "3")',
                    "required": [class_key(c) for c in metadata.classes or []],
                    "properties": {
                        class_key(c): {"type": "number"} for c in metadata.classes or []
                    },
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


def describe_native(schema: dict[str, Any], runtime: Runtime) -> None:
    _, components = openapi_components(runtime.spec, runtime.validator.adapter)
    components["Error"] = ERROR_SCHEMA
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    paths = schema["paths"]
    paths["/predict"] = {
        "post": {
            "summary": "Predict for a batch of instances",
            "operationId": "predict",
            "requestBody": {"required": True, "content": json_ref("PredictRequest")},
            "responses": {
                "200": {
                    "description": "one prediction per instance",
                    "content": json_ref("PredictResponse"),
                },
                **{code: error(text) for code, text in PREDICT_ERRORS.items()},
            },
        }
    }
    paths["/model"]["get"]["responses"]["401"] = error(AUTH_ERROR)
    paths["/model"]["get"]["responses"]["503"] = error("model not loaded yet")
    paths["/health/ready"]["get"]["responses"]["503"] = error("model not loaded yet")
