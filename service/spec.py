"""The JSON instances contract (`/predict` and KServe v1), built once at start-up from the
version's feature spec.

The validator is a pydantic TypeAdapter over TypedDicts: pydantic-core parses and checks the
raw JSON bytes in one pass and hands back plain dicts, with no model instances to build and no
second validation of the response.
"""

from __future__ import annotations

import math
from contextlib import suppress
from itertools import islice
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from service.features import NEEDS_A_VALUE, NUMERIC, FeatureSpec, typed_dict
from service.runtimes.base import NON_FINITE_REASON, Table, kinds_of, row_values

MAX_REPORTED_ERRORS = 50


def request_adapter(spec: FeatureSpec, max_batch_size: int) -> TypeAdapter[Any]:
    instance = spec.instance_type()
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
# checked in slices, stopping once the slices checked hold the faults a refusal lists. Every
# fault costs microseconds to describe, and a body of nothing but faults holds one every few
# bytes: so a refused body costs a slice or a few, however large the body.
ONE_PASS_BYTES = 16_384
_ERRORS_PER_SLICE = 256


class InstancesValidator:
    """`{"instances": [...]}` checked against the model's contract, at a bounded cost."""

    def __init__(self, spec: FeatureSpec, max_batch_size: int) -> None:
        self.spec = spec
        self.adapter = request_adapter(spec, max_batch_size)
        self.max_batch_size = max_batch_size
        self.max_keys = spec.max_keys
        self.slice = max(1, _ERRORS_PER_SLICE // self.max_keys)
        self.names = frozenset(spec.names)
        self.kinds = kinds_of(spec.metadata)
        self.numbers = [r for r in spec.rules if r.type in NUMERIC]
        self.number_names = [r.name for r in self.numbers]
        self.booleans = any(r.type == "boolean" for r in spec.rules)
        self.number_values = row_values(self.number_names) if self.numbers else None

    def table_from_json(self, body: bytes) -> Table:
        """The body's instances as the model's table. A large body is parsed once and, when
        its outline is plain and every column passes `FeatureRule.column`, goes straight into
        typed columns, with no Python object per value after the parse; anything else takes
        the validator, which accepts the same bodies and words every refusal."""
        if len(body) > ONE_PASS_BYTES:
            with suppress(orjson.JSONDecodeError):
                return self.table_from_python(orjson.loads(body))
        return Table.from_instances(self.validate_json(body), self.kinds)

    def table_from_python(self, payload: Any) -> Table:
        """The same from a parsed body."""
        table = self._typed_columns(payload)
        if table is not None:
            return table
        return Table.from_instances(self.validate_python(payload), self.kinds)

    def _typed_columns(self, payload: Any) -> Table | None:
        if type(payload) is not dict or len(payload) != 1:
            return None
        instances = payload.get("instances")
        if type(instances) is not list or not 0 < len(instances) <= self.max_batch_size:
            return None
        # Every instance an object with as many keys as the model has features (C loops), and
        # every feature's value taken from every instance below, or a KeyError: so exactly the
        # features' keys, no ignored column along.
        if set(map(type, instances)) != {dict} or set(map(len, instances)) != {len(self.names)}:
            return None
        try:
            return self._columns_of(instances)
        except KeyError:
            return None  # a feature missing: the validator names it

    def _columns_of(self, instances: list[dict[str, Any]]) -> Table | None:
        matrix = None
        if self.number_values is not None:  # number and integer features: one matrix if plain
            rows = list(map(self.number_values, instances))
            matrix = self.spec.number_matrix(rows, len(rows), self.numbers)
        columns: dict[str, Any] = {}
        for rule in self.spec.rules:
            name = rule.name
            if matrix is not None and rule.type in NUMERIC:
                continue
            column = rule.column([item[name] for item in instances])
            if column is None:
                return None
            columns[name] = column
        if matrix is not None and not self.booleans:
            # The non-text features are the matrix's: it is the table's numbers block.
            return Table.of_numbers(matrix.T, self.spec.names, columns)
        if matrix is not None:
            columns.update(zip(self.number_names, matrix.T, strict=True))
        return Table(columns, len(instances))

    def validate_json(self, body: bytes) -> list[dict[str, Any]]:
        payload = None
        if len(body) > ONE_PASS_BYTES:
            with suppress(orjson.JSONDecodeError):  # not JSON to orjson (NaN tokens too)
                payload = orjson.loads(body)
        if payload is None:  # small, or pydantic is to name the fault: one pass
            try:
                instances: list[dict[str, Any]] = self.adapter.validate_json(body)["instances"]
            except ValidationError as exc:
                with suppress(orjson.JSONDecodeError):  # the same words as a large body's
                    self._refuse_crowded(orjson.loads(body))
                raise self._failure(exc, 0) from None
            return instances
        return self.validate_python(payload)

    def _refuse_crowded(self, payload: Any) -> None:
        """An instance with more keys than the model takes, by more than the errors a refusal
        lists, is refused whole, before anything names its keys one by one."""
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list):
            return
        crowded = (
            _too_many_keys(index, len(item), self.max_keys)
            for index, item in enumerate(instances)
            if isinstance(item, dict) and len(item) > self.max_keys + MAX_REPORTED_ERRORS
        )
        first = list(islice(crowded, MAX_REPORTED_ERRORS))  # no message past the ones listed
        if first:
            raise InstancesError(first)

    def validate_python(self, payload: Any) -> list[dict[str, Any]]:
        """The parsed body, checked slice by slice after a look at its outline."""
        if not isinstance(payload, dict) or set(payload) != {"instances"}:
            return self._one_pass(payload)
        instances = payload["instances"]
        if not isinstance(instances, list):
            return self._one_pass(payload)
        if len(instances) > self.max_batch_size:
            raise BatchTooLargeError(len(instances))
        self._refuse_crowded(payload)
        checked: list[dict[str, Any]] = []
        faults: list[dict[str, Any]] = []
        for start in range(0, max(len(instances), 1), self.slice):
            part = {"instances": instances[start : start + self.slice]}
            try:
                rows = self.adapter.validate_python(part)["instances"]
            except ValidationError as exc:
                failure = self._failure(exc, start)
                if not isinstance(failure, InstancesError):
                    raise failure from None
                faults += failure.details
                if len(faults) >= MAX_REPORTED_ERRORS:
                    break
                continue
            if not faults:  # rows after a fault are only checked for the refusal's list
                checked += rows
        if faults:  # the first faults a refusal lists, however the slices fell
            raise InstancesError(faults[:MAX_REPORTED_ERRORS])
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
        return InstancesError(error_details(errors, self.spec, offset))


_EXTRA = "Extra inputs are not permitted"


def _too_many_keys(index: int, keys: int, allowed: int) -> dict[str, Any]:
    return {
        "type": "too_many_fields",
        "loc": ["body", "instances", index],
        "msg": f"{keys} fields, but this model takes at most {allowed} (its features and the "
        "columns it ignores)",
    }


def error_details(
    errors: list[ErrorDetails], spec: FeatureSpec, offset: int = 0
) -> list[dict[str, Any]]:
    """FastAPI's 422 shape, with `loc` as body, instances, index, field; never the input.
    `offset` is the index of the first instance the errors count from."""
    details = []
    for error in errors:
        message = error["msg"]
        value, loc = error.get("input"), error["loc"]
        if offset and len(loc) >= 2 and isinstance(loc[1], int):
            loc = (loc[0], loc[1] + offset, *loc[2:])
        if error["type"] == "literal_error" and loc and str(loc[-1]) in spec.by_name:
            message = spec.by_name[str(loc[-1])].category_message()
        if isinstance(value, float) and math.isnan(value) and len(loc) >= 3:
            # pandas writes a gap as NaN; the API wants null, and only where training saw gaps.
            if loc[2] in spec.nullable:
                message += "; send null for a missing value"
            else:
                message += f"; this feature {NEEDS_A_VALUE}"
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
