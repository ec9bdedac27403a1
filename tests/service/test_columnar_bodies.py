"""Large `/predict` and KServe v1 bodies go straight into typed columns when every value passes
at a glance (`FeatureRule.column`); anything doubtful takes the validator. Held here: the two
paths answer every body alike, row for row and refusal for refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.spec import ONE_PASS_BYTES
from tests.service.conftest import ClientFactory

ROWS = 400
BAD_ROW = 333


def _instances(example: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(example) for _ in range(ROWS)]


def _post(client: Any, instances: list[dict[str, Any]]) -> Any:
    body = json.dumps({"instances": instances})
    return client.post("/predict", content=body, headers={"content-type": "application/json"})


def _large(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert len(json.dumps({"instances": instances})) > ONE_PASS_BYTES  # the columnar path
    return instances


@pytest.fixture
def mixed(make_client: ClientFactory, mixed_store: Path) -> Any:
    return make_client(model_dir=mixed_store)


MIXED_ROW = {"size": 4.5, "colour": "red", "flag": True, "age": 40}

# One value each rule must judge (or word) itself: placed in one row of a large body, the answer
# must be the one that row gets alone, in a small body.
DOUBTFUL: list[tuple[str, Any]] = [
    ("size", True),
    ("size", "4.5"),
    ("size", 10**16),
    ("size", -1e16),
    ("size", 7),  # an integer for a number: accepted
    ("size", None),  # a gap where training saw one: accepted
    ("age", 40.5),
    ("age", 40.0),  # a whole float for an integer: accepted
    ("age", 10**30),
    ("age", False),
    ("age", None),  # training saw no gap in age
    ("flag", 1),
    ("flag", "true"),
    ("colour", "purple"),
    ("colour", ""),  # the empty string is a gap: accepted here
    ("colour", 3),
    ("colour", ["red"]),
    ("size", [4.5]),  # a list where a number goes: never taken for a row of numbers
    ("age", [40, 41]),
    ("size", {"value": 4.5}),
]


@pytest.mark.parametrize(("feature", "value"), DOUBTFUL)
def test_a_large_body_answers_as_its_rows_do_alone(mixed: Any, feature: str, value: Any) -> None:
    instances = _large(_instances(MIXED_ROW))
    instances[BAD_ROW][feature] = value
    alone = _post(mixed, [instances[BAD_ROW]])
    together = _post(mixed, instances)
    assert together.status_code == alone.status_code
    if alone.status_code == 200:
        assert together.json()["predictions"][BAD_ROW] == alone.json()["predictions"][0]
        assert (
            together.json()["predictions"][0] == _post(mixed, [MIXED_ROW]).json()["predictions"][0]
        )
        return
    (wanted,) = alone.json()["detail"]
    (detail,) = together.json()["detail"]
    assert detail["loc"] == ["body", "instances", BAD_ROW, feature]
    assert (detail["type"], detail["msg"]) == (wanted["type"], wanted["msg"])


# An instance whose keys are not exactly the features', in one row of a large body.
OUTLINES: dict[str, Any] = {
    "a key swapped": lambda row: {**{k: v for k, v in row.items() if k != "size"}, "sise": 4.5},
    "a key missing": lambda row: {k: v for k, v in row.items() if k != "age"},
    "a key too many": lambda row: {**row, "weight": 3},
    "keys beyond naming": lambda row: {**row, **{f"k{i}": i for i in range(60)}},
}


@pytest.mark.parametrize("outline", OUTLINES)
def test_a_large_body_with_an_odd_outline_answers_as_its_row_does_alone(
    mixed: Any, outline: str
) -> None:
    instances = _large(_instances(MIXED_ROW))
    instances[BAD_ROW] = OUTLINES[outline](instances[BAD_ROW])
    alone = _post(mixed, [instances[BAD_ROW]])
    together = _post(mixed, instances)
    assert alone.status_code == together.status_code == 422, together.text
    print(outline, [d["type"] for d in together.json()["detail"]])
    assert [d["msg"] for d in together.json()["detail"]] == [
        d["msg"] for d in alone.json()["detail"]
    ]
    assert {tuple(d["loc"][:3]) for d in together.json()["detail"]} == {
        ("body", "instances", BAD_ROW)
    }


def test_typed_columns_give_the_rows_own_answers(mixed: Any) -> None:
    """Every kind of value, gaps included, at every row: the columnar answer is each row's."""
    sizes = [1.5, 7, None, 9.25]
    colours = ["red", "green", "blue", None]
    flags = [True, False, None]
    ages = [3, 50.0, 17, 88]  # the training file had no gap in age
    instances = _large(
        [
            {
                "size": sizes[i % 4],
                "colour": colours[i % 4 if i % 3 else 0],
                "flag": flags[i % 3],
                "age": ages[(i // 2) % 4],
            }
            for i in range(ROWS)
        ]
    )
    validator = mixed.app.state.runtime.validator
    table = validator.table_from_json(json.dumps({"instances": instances}).encode())
    assert all(isinstance(c, np.ndarray) for c in table.columns.values())  # the columnar path
    together = _post(mixed, instances)
    assert together.status_code == 200, together.text
    for row in (0, 1, 2, 3, 5, 7, 11, 13, ROWS - 1):
        alone = _post(mixed, [instances[row]]).json()["predictions"][0]
        assert together.json()["predictions"][row] == alone


def test_a_gap_in_a_feature_trained_without_one_is_refused_alike(
    client: Any, penguin_example: dict[str, Any]
) -> None:
    instances = _large(_instances(penguin_example))
    instances[BAD_ROW]["island"] = None
    response = _post(client, instances)
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "instances", BAD_ROW, "island"]
    (alone,) = _post(client, [instances[BAD_ROW]]).json()["detail"]
    assert detail["msg"] == alone["msg"]


def test_kserve_v1_lists_take_the_same_path(client: Any, penguin_example: dict[str, Any]) -> None:
    names = list(penguin_example)
    rows = [[penguin_example[n] for n in names] for _ in range(ROWS)]
    rows[BAD_ROW][names.index("island")] = "Atlantis"
    url = "/v1/models/penguins:predict"
    refused = client.post(url, json={"instances": rows})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith(f"instances[{BAD_ROW}].island: ")
    rows[BAD_ROW] = rows[0]
    answered = client.post(url, json={"instances": rows})
    assert answered.status_code == 200
    one = client.post(url, json={"instances": rows[:1]}).json()["predictions"][0]
    assert answered.json()["predictions"] == [one] * ROWS
