"""A category the model never saw names the categories it knows: the first 20 and how many more,
the same way on every route and in batch scoring (issue 19: one bad zip code answered 21 KB)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scoring.cli import main as score_main
from tests.conftest import train, write_csv
from tests.service.conftest import ClientFactory

ZIPS = [f"Z{n:05d}" for n in range(10_000, 10_300)]


@pytest.fixture(scope="module")
def zip_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zips")
    rng = random.Random(3)
    rows = [[ZIPS[i % len(ZIPS)], rng.uniform(0, 10)] for i in range(1500)]
    for row in rows:
        row.append("high" if row[1] > 5 else "low")
    data = write_csv(folder / "zips.csv", ["zip", "size", "label"], rows)
    assert train(folder / "models", "--data", str(data), "--target", "label") == 0
    return folder / "models"


def expected_list() -> str:
    shown = ", ".join(repr(z) for z in ZIPS[:20])
    return f"{shown} and 280 more"


def test_every_route_names_twenty_categories_and_a_count(
    make_client: ClientFactory, zip_store: Path, tmp_path: Path
) -> None:
    client: TestClient = make_client(model_dir=zip_store)
    native = client.post("/predict", json={"instances": [{"zip": "Z99999", "size": 1.0}]})
    assert native.status_code == 422
    (detail,) = native.json()["detail"]
    assert detail["msg"] == f"Input should be a category seen in training: {expected_list()}"
    assert len(native.content) < 1000
    v2 = client.post(
        "/v2/models/zips/infer",
        json={
            "inputs": [
                {"name": "zip", "datatype": "BYTES", "shape": [1], "data": ["Z99999"]},
                {"name": "size", "datatype": "FP64", "shape": [1], "data": [1.0]},
            ]
        },
    )
    assert v2.status_code == 400
    assert v2.json()["error"].endswith(f"is not a category seen in training ({expected_list()})")
    data = write_csv(tmp_path / "q.csv", ["zip", "size"], [["Z99999", 1.0]])
    out = tmp_path / "out.csv"
    assert score_main(["--models-dir", str(zip_store), "--data", str(data), "--out", str(out)]) == 0
    rejects = (tmp_path / "out.rejects.csv").read_text()
    assert f"zip: Input should be a category seen in training: {expected_list()}" in rejects
