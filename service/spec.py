"""The request contract, built once at start-up from the artifact's feature schema.

The validator is a pydantic TypeAdapter over TypedDicts: pydantic-core parses and checks the
raw JSON bytes in one pass and hands back plain dicts, with no model instances to build and no
second validation of the response.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import suppress
from typing import Annotated, Any, Literal, NotRequired

import orjson
from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from modelstore import Feature, Metadata, class_key
from service.runtimes.base import NON_FINITE_REASON

# The largest magnitude a number or integer feature may have. The compiled graph computes in
# float32 (largest 3.4e38), and a linear model scales, weighs and sums its inputs: far beyond
# any trained range that overflows to infinity. 1e15 is past any measurement a table holds and
# leaves about 23 orders of magnitude for the model's arithmetic.
MAX_MAGNITUDE = 10**15


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 2007.0 (what pandas writes for an integer column with gaps)
    is the integer 2007. 2007.5 stays a float and fails the strict integer check."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


FiniteNumber = Annotated[
    float, Strict(), Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)
]
# Nested so the bounds stay `minimum`/`maximum` in the JSON schema the docs show.
Integer = Annotated[
    Annotated[int, Strict(), Field(ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)],
    BeforeValidator(_whole_number),
]
Boolean = Annotated[bool, Strict()]
MAX_REPORTED_ERRORS = 50
MAX_SHOWN_CATEGORIES = 20


def categories_text(known: Iterable[str]) -> str:
    """The categories an error names: the first few in order and how many more, so one bad zip
    code never answers with thousands of them."""
    ordered = sorted(known)
    shown = ", ".join(repr(c) for c in ordered[:MAX_SHOWN_CATEGORIES])
    more = len(ordered) - MAX_SHOWN_CATEGORIES
    return shown + (f" and {more} more" if more > 0 else "")


def category_message(known: Iterable[str]) -> str:
    return f"Input should be a category seen in training: {categories_text(known)}"


def typed_dict(name: str, fields: dict[str, Any], extra: str = "forbid") -> Any:
    """A TypedDict made at run time (so mypy cannot see it); unknown keys are refused."""
    factory: Any = TypedDict
    made = factory(name, fields)
    made.__pydantic_config__ = ConfigDict(extra=extra)  # type: ignore[typeddict-item]
    return made


def _empty_is_missing(value: Any) -> Any:
    """The one meaning of "": a missing value, as an empty CSV cell is, on every route and in
    both runtimes (never an unseen category, even when unknown categories are accepted)."""
    return None if value == "" else value


def _empty_is_refused(value: Any) -> Any:
    if value == "":
        raise PydanticCustomError(
            "missing_value",
            "an empty string is a missing value, and this feature had no missing values in "
            "training",
        )
    return value


def feature_type(feature: Feature, accept_unknown: bool = False) -> Any:
    """A feature's value type; `accept_unknown` lets a string feature take any text
    (UNKNOWN_CATEGORIES=accept: the pipeline encodes a category it never saw as unseen)."""
    base: Any
    if feature.type == "number":
        base = FiniteNumber
    elif feature.type == "integer":
        base = Integer
    elif feature.type == "boolean":
        base = Boolean
    elif accept_unknown:
        # "" is never a category: the schema says so where the feature takes no missing value.
        base = Annotated[str, Strict(), Field(min_length=0 if feature.nullable else 1)]
    else:
        base = Literal[tuple(feature.categories or ())]
    if feature.type == "string":
        if feature.nullable:
            return Annotated[base | None, BeforeValidator(_empty_is_missing)]
        return Annotated[base, BeforeValidator(_empty_is_refused)]
    return base | None if feature.nullable else base


def instance_type(metadata: Metadata, accept_unknown: bool = False) -> Any:
    fields = {f.name: feature_type(f, accept_unknown) for f in metadata.features}
    # Columns training left out may come along (a DataFrame minus its target) and are ignored.
    fields.update(dict.fromkeys(metadata.ignored_columns, NotRequired[Any]))
    return typed_dict("Instance", fields)


def request_adapter(
    metadata: Metadata, max_batch_size: int, accept_unknown: bool = False
) -> TypeAdapter[Any]:
    instance = instance_type(metadata, accept_unknown)
    batch = Annotated[list[instance], Field(min_length=1, max_length=max_batch_size)]  # type: ignore[valid-type]
    request = typed_dict("PredictRequest", {"instances": batch})
    return TypeAdapter(request)


class BatchTooLargeError(Exception):
    """More instances than MAX_BATCH_SIZE: 413 on every route."""


class InstancesError(Exception):
    """Instances that fail the contract; `details` in FastAPI's 422 shape."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__(details)
        self.details = details


# Bodies up to this size are parsed and checked in one pass; a larger one is parsed first, then
# checked in slices, stopping at the first slice that fails. Every fault costs the event loop
# microseconds to describe, and a body of nothing but faults holds one every few bytes: so the
# cost of a refused body stays that of one slice, however large the body.
ONE_PASS_BYTES = 16_384
_ERRORS_PER_SLICE = 2048


class InstancesValidator:
    """`{"instances": [...]}` checked against the model's contract, at a bounded cost."""

    def __init__(self, metadata: Metadata, max_batch_size: int, accept_unknown: bool) -> None:
        self.adapter = request_adapter(metadata, max_batch_size, accept_unknown)
        self.max_batch_size = max_batch_size
        self.nullable = frozenset(f.name for f in metadata.features if f.nullable)
        # The most keys an instance may have: each feature and each column training ignored.
        self.max_keys = len(metadata.features) + len(metadata.ignored_columns)
        self.slice = max(1, _ERRORS_PER_SLICE // self.max_keys)
        self.categories = {
            f.name: f.categories for f in metadata.features if f.type == "string" and f.categories
        }

    def validate_json(self, body: bytes) -> list[dict[str, Any]]:
        payload = None
        if len(body) > ONE_PASS_BYTES:
            with suppress(orjson.JSONDecodeError):  # not JSON to orjson (NaN tokens too)
                payload = orjson.loads(body)
        if payload is None:  # small, or pydantic is to name the fault: one pass
            try:
                instances: list[dict[str, Any]] = self.adapter.validate_json(body)["instances"]
            except ValidationError as exc:
                raise self._failure(exc, 0) from None
            return instances
        return self.validate_python(payload)

    def validate_python(self, payload: Any) -> list[dict[str, Any]]:
        """The parsed body, checked slice by slice after a look at its outline."""
        if not isinstance(payload, dict) or set(payload) != {"instances"}:
            return self._one_pass(payload)
        instances = payload["instances"]
        if not isinstance(instances, list):
            return self._one_pass(payload)
        if len(instances) > self.max_batch_size:
            raise BatchTooLargeError(len(instances))
        crowded = [
            _too_many_keys(index, len(item), self.max_keys)
            for index, item in enumerate(instances)
            if isinstance(item, dict) and len(item) > self.max_keys
        ]
        if crowded:
            raise InstancesError(crowded[:MAX_REPORTED_ERRORS])
        checked: list[dict[str, Any]] = []
        for start in range(0, max(len(instances), 1), self.slice):
            part = {"instances": instances[start : start + self.slice]}
            try:
                checked += self.adapter.validate_python(part)["instances"]
            except ValidationError as exc:
                raise self._failure(exc, start) from None
        return checked

    def _one_pass(self, payload: Any) -> list[dict[str, Any]]:
        """A body whose outline is wrong: its top-level faults, as few as its keys."""
        if isinstance(payload, dict) and len(payload) > MAX_REPORTED_ERRORS:
            extra = [k for k in payload if k != "instances"][:MAX_REPORTED_ERRORS]
            raise InstancesError(
                [
                    {"type": "extra_forbidden", "loc": ["body", k[:100]], "msg": _EXTRA}
                    for k in extra
                ]
            )
        try:
            checked: list[dict[str, Any]] = self.adapter.validate_python(payload)["instances"]
        except ValidationError as exc:
            raise self._failure(exc, 0) from None
        return checked

    def _failure(self, exc: ValidationError, offset: int) -> Exception:
        errors = exc.errors(include_url=False, include_context=False)
        if any(e["type"] == "too_long" and e["loc"] == ("instances",) for e in errors):
            return BatchTooLargeError()
        return InstancesError(error_details(errors, self.nullable, offset, self.categories))


_EXTRA = "Extra inputs are not permitted"


def _too_many_keys(index: int, keys: int, allowed: int) -> dict[str, Any]:
    return {
        "type": "too_many_fields",
        "loc": ["body", "instances", index],
        "msg": f"{keys} fields, but this model takes at most {allowed} (its features and the "
        "columns it ignores)",
    }


def error_details(
    errors: list[ErrorDetails],
    nullable: frozenset[str],
    offset: int = 0,
    categories: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """FastAPI's 422 shape, with `loc` as body, instances, index, field; never the input.
    `offset` is the index of the first instance the errors count from."""
    details = []
    for error in errors:
        message = error["msg"]
        value, loc = error.get("input"), error["loc"]
        if offset and len(loc) >= 2 and isinstance(loc[1], int):
            loc = (loc[0], loc[1] + offset, *loc[2:])
        if error["type"] == "literal_error" and categories and loc[-1] in categories:
            message = category_message(categories[str(loc[-1])])
        if isinstance(value, float) and math.isnan(value) and len(loc) >= 3:
            # pandas writes a gap as NaN; the API wants null, and only where training saw gaps.
            if loc[2] in nullable:
                message += "; send null for a missing value"
            else:
                message += "; this feature had no missing values in training, so it needs one"
        details.append({"type": error["type"], "loc": ["body", *loc], "msg": message})
        if len(details) == MAX_REPORTED_ERRORS:
            break
    return details


def non_finite_details(rows: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "type": "non_finite_prediction",
            "loc": ["body", "instances", row],
            "msg": NON_FINITE_REASON,
        }
        for row in rows[:MAX_REPORTED_ERRORS]
    ]


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
    metadata: Metadata, adapter: TypeAdapter[Any], accept_unknown: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request body and response schemas for `POST /predict`, for `/openapi.json`."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    instance = components["Instance"]
    instance["description"] = f"One row of features for {metadata.name} v{metadata.version}."
    example = docs_example(metadata)
    instance["examples"] = [example]
    for feature in metadata.features:
        prop = instance["properties"][feature.name]
        prop["description"] = f"{feature.type}{', may be null' if feature.nullable else ''}"
        if feature.type == "string" and accept_unknown:
            seen = ", ".join(feature.categories or [])
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
