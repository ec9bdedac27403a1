"""The predictor alone: same answers as the artifact's own predict and predict_proba."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from modelstore import ModelStore
from service.predictor import Predictor
from tests.conftest import PENGUINS_CSV


def penguin_instances(store: Path, limit: int = 60) -> list[dict[str, Any]]:
    import csv

    meta = json.loads((store / "penguins" / "1" / "metadata.json").read_text())
    kinds = {f["name"]: f["type"] for f in meta["features"]}
    rows = []
    with PENGUINS_CSV.open() as handle:
        for raw in list(csv.DictReader(handle))[:limit]:
            instance: dict[str, Any] = {}
            for name, kind in kinds.items():
                value = raw[name]
                if value in ("", "NA"):
                    instance[name] = None
                elif kind == "number":
                    instance[name] = float(value)
                elif kind == "integer":
                    instance[name] = int(value)
                else:
                    instance[name] = value
            rows.append(instance)
    return rows


def offline_matrix(instances: list[dict[str, Any]], names: list[str]) -> np.ndarray[Any, Any]:
    return np.array(
        [[math.nan if i[n] is None else i[n] for n in names] for i in instances], dtype=object
    )


def test_classifier_matches_offline_predict_and_proba(penguins_store: Path) -> None:
    store = ModelStore(penguins_store)
    loaded = store.load(store.resolve())
    predictor = Predictor(loaded)
    instances = penguin_instances(penguins_store)
    assert any(v is None for i in instances for v in i.values())  # row 4 has gaps
    predictions = predictor.predict(instances)
    model = joblib.load(loaded.ref.path / "model.joblib")
    X = offline_matrix(instances, predictor.feature_names)
    assert [p["label"] for p in predictions] == model.predict(X).tolist()
    expected = model.predict_proba(X)
    for prediction, row in zip(predictions, expected, strict=True):
        assert list(prediction["probabilities"]) == ["Adelie", "Chinstrap", "Gentoo"]
        assert list(prediction["probabilities"].values()) == row.tolist()


def test_regressor_matches_offline_predict(regression_store: Path) -> None:
    store = ModelStore(regression_store)
    loaded = store.load(store.resolve())
    predictor = Predictor(loaded)
    example = dict(loaded.metadata.example)
    instances = [example, {**example, "flipper_length_mm": None}]
    predictions = predictor.predict(instances)
    model = joblib.load(loaded.ref.path / "model.joblib")
    expected = model.predict(offline_matrix(instances, predictor.feature_names)).tolist()
    assert predictions == [{"value": v} for v in expected]


def test_cost_is_measured_at_start(penguins_store: Path) -> None:
    store = ModelStore(penguins_store)
    predictor = Predictor(store.load(store.resolve()))
    assert predictor.fixed_cost > 0
    assert predictor.estimated_seconds(100) >= predictor.estimated_seconds(1)
