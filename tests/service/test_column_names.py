"""Any column name works end to end: the graph's inputs are an internal mapping recorded in the
metadata, and clients use the table's own names on every route and in scoring (issue 20)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pytest

from modelstore import ModelStore
from modelstore.spec import graph_input_names
from scoring.cli import main as score_main
from tests.conftest import train, write_csv
from tests.service.conftest import ClientFactory

AWKWARD = [
    "mean radius",
    "Min.Price",
    "MPG-city",
    "ratio:2",
    "2nd place",
    "Größe",
    "x" * 200,
    "a b",
    "a_b",  # sanitises to the same text as "a b"
    "kind of thing",
]


def test_graph_input_names_are_safe_unique_and_stable() -> None:
    names = graph_input_names(AWKWARD)
    assert len(set(names)) == len(names)
    assert all(n.isascii() and n.replace("_", "a").isalnum() and not n[0].isdigit() for n in names)
    assert names[:5] == ["mean_radius", "Min_Price", "MPG_city", "ratio_2", "_2nd_place"]
    assert names[7:9] == ["a_b", "a_b_2"]
    assert graph_input_names(AWKWARD) == names


@pytest.fixture(scope="module")
def awkward_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("awkward")
    rng = random.Random(7)
    rows: list[list[Any]] = []
    for _ in range(300):
        numbers = [round(rng.uniform(0, 10), 3) for _ in AWKWARD[:-1]]
        kind = rng.choice(["red", "green", "blue"])
        label = "big" if numbers[0] + numbers[7] + (3 if kind == "red" else 0) > 11 else "small"
        rows.append([*numbers, kind, label])
    data = write_csv(folder / "awkward.csv", [*AWKWARD, "label"], rows)
    assert train(folder / "models", "--data", str(data), "--target", "label", "--name", "awk") == 0
    return folder / "models"


def test_awkward_names_get_a_verified_graph_and_every_route_uses_them(
    awkward_store: Path, make_client: ClientFactory, tmp_path: Path
) -> None:
    store = ModelStore(awkward_store)
    meta = store.metadata(store.resolve("awk"))
    assert meta.onnx is not None
    assert meta.onnx.verified, meta.onnx.reason
    assert meta.onnx.inputs == graph_input_names(AWKWARD)
    assert [f.name for f in meta.features] == AWKWARD
    client = make_client(model_dir=awkward_store, runtime="onnx")
    instance = dict(meta.example)
    native = client.post("/predict", json={"instances": [instance]})
    assert native.status_code == 200, native.text
    label = native.json()["predictions"][0]["label"]
    reference = make_client(model_dir=awkward_store, runtime="sklearn")
    assert (
        reference.post("/predict", json={"instances": [instance]}).json()["predictions"][0]["label"]
        == label
    )
    tensors = [
        {
            "name": f.name,
            "datatype": "BYTES" if f.type == "string" else "FP64",
            "shape": [1],
            "data": [instance[f.name]],
        }
        for f in meta.features
    ]
    v2 = client.post("/v2/models/awk/infer", json={"inputs": tensors})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == [label]
    v1 = client.post("/v1/models/awk:predict", json={"instances": [instance]})
    assert v1.json() == {"predictions": [label]}
    docs = client.get("/openapi.json").json()
    assert set(AWKWARD) <= set(docs["components"]["schemas"]["Instance"]["properties"])
    data = write_csv(tmp_path / "q.csv", AWKWARD, [[instance[name] for name in AWKWARD]])
    out = tmp_path / "out.csv"
    assert (
        score_main(["--models-dir", str(awkward_store), "--data", str(data), "--out", str(out)])
        == 0
    )
    with out.open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["prediction"] == label
