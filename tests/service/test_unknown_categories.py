"""UNKNOWN_CATEGORIES: reject (default) or accept, predicted as the pipeline does offline."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelstore import ModelStore
from scoring.cli import main as score
from tests.service.conftest import ClientFactory

UNSEEN = {"island": "Mars", "sex": "unknown"}


def offline(store: Path, instances: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    models = ModelStore(store)
    ref = models.resolve()
    meta = models.metadata(ref)
    pipeline = joblib.load(ref.path / meta.artifact.file)
    names = [f.name for f in meta.features]
    matrix = np.array(
        [[np.nan if i[n] is None else i[n] for n in names] for i in instances], dtype=object
    )
    return np.asarray(pipeline.predict_proba(matrix))


def test_unknown_categories_are_refused_by_default(
    client: TestClient, penguin_example: dict[str, Any]
) -> None:
    response = client.post("/predict", json={"instances": [{**penguin_example, **UNSEEN}]})
    assert response.status_code == 422
    island = client.get("/openapi.json").json()["components"]["schemas"]["Instance"]
    assert island["properties"]["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert "unknown_categories_total{" not in client.get("/metrics").text


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_accepted_unknowns_answer_as_the_pipeline_and_are_counted(
    make_client: ClientFactory,
    penguins_store: Path,
    penguin_example: dict[str, Any],
    runtime: str,
) -> None:
    client = make_client(unknown_categories="accept", runtime=runtime)
    instances = [{**penguin_example, **UNSEEN}, {**penguin_example, "island": "Atlantis"}]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    expected = offline(penguins_store, instances)
    allowed = 1e-12 if runtime == "sklearn" else 1e-4  # float32 graph: within its tolerance
    for prediction, row in zip(response.json()["predictions"], expected, strict=True):
        got = np.array(list(prediction["probabilities"].values()))
        assert np.abs(got - row).max() <= allowed
    tensors = [
        {"name": "island", "datatype": "BYTES", "shape": [1], "data": ["Mars"]},
        *(
            {"name": k, "datatype": "FP64", "shape": [1], "data": [float(v)]}
            for k, v in penguin_example.items()
            if k not in ("island", "sex", "year")
        ),
        {"name": "sex", "datatype": "BYTES", "shape": [1], "data": ["unknown"]},
        {"name": "year", "datatype": "INT64", "shape": [1], "data": [penguin_example["year"]]},
    ]
    v2 = client.post("/v2/models/penguins/infer", json={"inputs": tensors})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == [response.json()["predictions"][0]["label"]]
    metrics = client.get("/metrics").text
    assert 'unknown_categories_total{feature="island"} 3.0' in metrics
    assert 'unknown_categories_total{feature="sex"} 2.0' in metrics
    known = client.post("/predict", json={"instances": [penguin_example]})
    assert known.status_code == 200
    assert 'unknown_categories_total{feature="island"} 3.0' in client.get("/metrics").text


def test_the_docs_say_unknowns_are_accepted(make_client: ClientFactory) -> None:
    client = make_client(unknown_categories="accept")
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Instance"]
    island = schema["properties"]["island"]
    assert "enum" not in island
    assert island["type"] == "string"
    assert "seen in training: Biscoe, Dream, Torgersen" in island["description"]
    assert "UNKNOWN_CATEGORIES=accept" in island["description"]


def test_an_invalid_setting_stops_start_up(make_client: ClientFactory) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        make_client(unknown_categories="maybe")


def test_batch_scoring_accepts_unknowns_when_asked(
    penguins_store: Path, tmp_path: Path, penguin_example: dict[str, Any]
) -> None:
    data = tmp_path / "in.csv"
    row = {**penguin_example, **UNSEEN}
    with data.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    out = tmp_path / "out.csv"
    args = ["--models-dir", str(penguins_store), "--data", str(data), "--out", str(out)]
    assert score(args) == 0
    assert out.read_text().count("\n") == 1  # the header only: the row was rejected
    assert score([*args, "--unknown-categories", "accept", "--runtime", "sklearn"]) == 0
    with out.open(newline="") as handle:
        (scored,) = list(csv.DictReader(handle))
    expected = offline(penguins_store, [row])[0]
    assert [float(scored[f"probability_{c}"]) for c in ("Adelie", "Chinstrap", "Gentoo")] == list(
        expected
    )
