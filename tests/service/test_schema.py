"""The request validator built from a model's feature schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from modelstore import Feature, Metadata
from service.features import FeatureSpec
from service.openapi.native import openapi_components
from service.spec import (
    BatchTooLargeError,
    InstancesError,
    InstancesValidator,
    request_adapter,
)


def metadata(features: list[Feature], example: dict[str, Any], **changes: Any) -> Metadata:
    return Metadata.model_validate(
        {
            "format_version": 2,
            "name": "unit",
            "version": 3,
            "created_at": datetime.now(UTC),
            "task": "classification",
            "target": "y",
            "features": [f.model_dump() for f in features],
            "classes": ["a", "b"],
            "metrics": {},
            "data": {"source": "x.csv", "rows": 10, "sha256": "0" * 64},
            "split": {"test_size": 0.2, "train_rows": 8, "test_rows": 2},
            "estimator": "linear:LogisticRegression",
            "params": {},
            "seed": 1,
            "environment": {},
            "git": {"commit": None, "dirty": None},
            "artifact": {"file": "model.joblib", "sha256": "0" * 64, "bytes": 1},
            "example": example,
            **changes,
        }
    )


FEATURES = [
    Feature(name="size", type="number", nullable=False),
    Feature(name="count", type="integer", nullable=True),
    Feature(name="on", type="boolean", nullable=False),
    Feature(name="colour name", type="string", nullable=True, categories=["blue", "red"]),
]
GOOD = {"size": 1.5, "count": 3, "on": True, "colour name": "red"}
META = metadata(FEATURES, GOOD)
ADAPTER = request_adapter(FeatureSpec(META), max_batch_size=3)
VALIDATOR = InstancesValidator(FeatureSpec(META), max_batch_size=3)


def errors_for(body: str) -> list[tuple[str, list[Any]]]:
    with pytest.raises(InstancesError) as caught:
        VALIDATOR.validate_json(body.encode())
    return [(e["type"], e["loc"]) for e in caught.value.details]


def test_accepts_a_valid_instance_and_nulls_where_allowed() -> None:
    body = '{"instances": [%s, {"size": 2, "count": null, "on": false, "colour name": null}]}'
    parsed = ADAPTER.validate_json(body % __import__("json").dumps(GOOD))
    assert parsed["instances"][0] == GOOD
    assert parsed["instances"][1] == {"size": 2.0, "count": None, "on": False, "colour name": None}


@pytest.mark.parametrize(
    ("field", "raw", "kind"),
    [
        ("size", "NaN", "finite_number"),
        ("size", "Infinity", "finite_number"),
        ("size", "-Infinity", "finite_number"),
        ("size", "1e400", "finite_number"),
        ("size", '"1.5"', "float_type"),
        ("size", "null", "float_type"),
        ("size", "true", "float_type"),
        ("count", "1.5", "int_type"),
        ("count", "2007.5", "int_type"),
        ("count", "true", "int_type"),
        ("count", '"2007"', "int_type"),
        ("count", "1" + "0" * 30, "less_than_equal"),
        ("count", "1e16", "less_than_equal"),
        ("size", "1e16", "less_than_equal"),
        ("size", "-1.5e15", "greater_than_equal"),
        ("on", "1", "bool_type"),
        ("on", '"true"', "bool_type"),
        ("colour name", '"green"', "literal_error"),
        ("colour name", "7", "literal_error"),
    ],
)
def test_rejects_wrong_values_with_index_and_field(field: str, raw: str, kind: str) -> None:
    import json

    second = json.dumps(GOOD).replace(f'"{field}": {json.dumps(GOOD[field])}', f'"{field}": {raw}')
    errors = errors_for(f'{{"instances": [{json.dumps(GOOD)}, {second}]}}')
    assert errors == [(kind, ["body", "instances", 1, field])]


def test_whole_floats_are_integers_and_the_bounds_are_inclusive() -> None:
    # pandas writes an integer column with gaps as floats: df.to_dict("records") gives 2007.0.
    body = {"instances": [{**GOOD, "count": 2007.0, "size": 1e15}, {**GOOD, "size": -1e15}]}
    parsed = ADAPTER.validate_json(__import__("json").dumps(body))
    assert parsed["instances"][0]["count"] == 2007
    assert type(parsed["instances"][0]["count"]) is int
    _, components = openapi_components(FeatureSpec(META), ADAPTER)
    count = components["Instance"]["properties"]["count"]["anyOf"][0]
    assert count == {"type": "integer", "minimum": -(10**15), "maximum": 10**15}


def test_unknown_and_missing_fields() -> None:
    import json

    extra = json.dumps({**GOOD, "shape": "round"})
    missing = json.dumps({k: v for k, v in GOOD.items() if k != "on"})
    errors = errors_for(f'{{"instances": [{extra}, {missing}]}}')
    assert ("extra_forbidden", ["body", "instances", 0, "shape"]) in errors
    assert ("missing", ["body", "instances", 1, "on"]) in errors


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("not json", "json_invalid"),
        ("", "json_invalid"),
        ("[]", "dict_type"),
        ('{"instances": []}', "too_short"),
        ('{"instances": {}}', "list_type"),
        ('{"rows": []}', "missing"),
    ],
)
def test_malformed_bodies(body: str, kind: str) -> None:
    assert errors_for(body)[0][0] == kind


def test_oversize_batch_is_recognised() -> None:
    import json

    with pytest.raises(BatchTooLargeError):
        VALIDATOR.validate_json(json.dumps({"instances": [GOOD] * 4}).encode())


def test_openapi_components_name_features_and_carry_the_example() -> None:
    request, components = openapi_components(FeatureSpec(META), ADAPTER)
    instance = components["Instance"]
    assert list(instance["properties"]) == ["size", "count", "on", "colour name"]
    assert instance["properties"]["size"]["type"] == "number"
    assert instance["properties"]["on"]["type"] == "boolean"
    assert instance["additionalProperties"] is False
    assert instance["examples"] == [GOOD]
    assert request["examples"] == [{"instances": [GOOD]}]
    assert request["properties"]["instances"]["maxItems"] == 3
    assert set(components["Prediction"]["properties"]["probabilities"]["properties"]) == {"a", "b"}


def test_a_format_1_training_row_is_never_shown_in_the_docs() -> None:
    old = metadata(FEATURES, GOOD, format_version=1)
    request, components = openapi_components(FeatureSpec(old), request_adapter(FeatureSpec(old), 3))
    placeholder = {"size": 0.0, "count": 0, "on": False, "colour name": "blue"}
    assert components["Instance"]["examples"] == [placeholder]
    assert request["examples"] == [{"instances": [placeholder]}]


def test_nan_from_pandas_gets_a_hint_to_send_null() -> None:
    body = '{"instances": [{"size": NaN, "count": NaN, "on": true, "colour name": "red"}]}'
    with pytest.raises(InstancesError) as caught:
        VALIDATOR.validate_json(body.encode())
    messages = {e["loc"][-1]: e["msg"] for e in caught.value.details}
    assert messages["count"].endswith("; send null for a missing value")
    assert messages["size"].endswith("had no missing values in training, so it needs one")


def test_columns_training_ignored_are_accepted_and_dropped() -> None:
    meta = metadata(FEATURES, GOOD, ignored_columns=["customer_id"])
    adapter = request_adapter(FeatureSpec(meta), 3)
    parsed = adapter.validate_python({"instances": [{**GOOD, "customer_id": "c-17"}]})
    assert parsed["instances"][0]["size"] == 1.5
    with pytest.raises(ValidationError):  # other unknown columns are still errors
        adapter.validate_python({"instances": [{**GOOD, "other": 1}]})
    _, components = openapi_components(FeatureSpec(meta), adapter)
    assert "customer_id" not in components["Instance"].get("required", [])


@pytest.mark.parametrize(
    ("classes", "keys", "kind"),
    [([False, True], {"false", "true"}, "boolean"), ([1, 3], {"1", "3"}, "integer")],
)
def test_probability_keys_in_the_schema_match_the_responses(
    classes: list[Any], keys: set[str], kind: str
) -> None:
    meta = metadata(FEATURES, GOOD, classes=classes)
    _, components = openapi_components(FeatureSpec(meta), request_adapter(FeatureSpec(meta), 3))
    prediction = components["Prediction"]["properties"]
    assert set(prediction["probabilities"]["properties"]) == keys
    assert prediction["label"]["type"] == kind
    assert prediction["label"]["enum"] == classes
