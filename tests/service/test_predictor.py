"""The predictors alone: both runtimes answer as the artifact's own predict and predict_proba."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from modelstore import ModelStore
from service.features import FeatureSpec
from service.protocols.v2_model import TensorModel
from service.runtimes.base import NonFinitePredictionError, Predictor, Table, check_finite
from service.runtimes.onnx import BOUND_SHAPES, BOUND_VALUES_MAX, OnnxPredictor
from service.runtimes.sklearn import SklearnPredictor
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


def predictors(store: Path) -> dict[str, Predictor]:
    """Both runtimes on the same version: the compiled graph and the pickled pipeline."""
    models = ModelStore(store)
    loaded = models.load(models.resolve())
    return {
        "onnx": OnnxPredictor(loaded.metadata, loaded.graph or b""),
        "sklearn": SklearnPredictor(loaded.metadata, loaded.estimator),
    }


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_classifier_matches_offline_predict_and_proba(penguins_store: Path, runtime: str) -> None:
    store = ModelStore(penguins_store)
    loaded = store.load(store.resolve())
    predictor = predictors(penguins_store)[runtime]
    assert predictor.runtime == runtime
    instances = penguin_instances(penguins_store)
    assert any(v is None for i in instances for v in i.values())  # row 4 has gaps
    predictions = predictor.predict(instances)
    model = joblib.load(loaded.ref.path / "model.joblib")
    X = offline_matrix(instances, [f.name for f in loaded.metadata.features])
    assert [p["label"] for p in predictions] == model.predict(X).tolist()
    expected = model.predict_proba(X)
    assert loaded.metadata.onnx is not None
    # scikit-learn answers exactly; the graph within the deviation measured at training.
    allowed = loaded.metadata.onnx.max_deviation if runtime == "onnx" else 0.0
    assert allowed is not None
    for prediction, row in zip(predictions, expected, strict=True):
        assert list(prediction["probabilities"]) == ["Adelie", "Chinstrap", "Gentoo"]
        got = np.array(list(prediction["probabilities"].values()))
        assert np.abs(got - row).max() <= allowed + 1e-12


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_regressor_matches_offline_predict(regression_store: Path, runtime: str) -> None:
    store = ModelStore(regression_store)
    loaded = store.load(store.resolve())
    predictor = predictors(regression_store)[runtime]
    example = dict(loaded.metadata.example)
    instances = [example, {**example, "flipper_length_mm": None}]
    predictions = predictor.predict(instances)
    model = joblib.load(loaded.ref.path / "model.joblib")
    expected = model.predict(offline_matrix(instances, predictor.feature_names))
    got = np.array([p["value"] for p in predictions])
    assert loaded.metadata.onnx is not None
    allowed = loaded.metadata.onnx.tolerance if runtime == "onnx" else 0.0
    assert np.abs(got - expected).max() <= allowed


def test_cost_is_measured_at_start(penguins_store: Path) -> None:
    for predictor in predictors(penguins_store).values():
        assert predictor.fixed_cost > 0
        assert predictor.estimated_seconds(100) >= predictor.estimated_seconds(1)


def test_the_graph_answers_alike_through_its_bound_inputs(numeric_store: Path) -> None:
    """Calls of up to BOUND_VALUES_MAX values go through inputs bound to a buffer per row count
    (kept for the last BOUND_SHAPES counts, per thread): every call must see its own rows, in
    any order of shapes, from two threads at once, as an unbound call of the graph does."""
    predictor = predictors(numeric_store)["onnx"]
    assert isinstance(predictor, OnnxPredictor)
    assert not predictor.text_inputs
    names = predictor.feature_names
    rng = np.random.default_rng(7)
    widest = BOUND_VALUES_MAX // len(names)  # the most rows a bound call takes
    counts = [1, 3, 1, 100, *range(2, 3 + BOUND_SHAPES), 1, 3, widest, widest + 1, 100]
    tables = []
    for rows in counts:
        block = rng.uniform(10, 250, size=(len(names), rows))
        block[-1] = rng.integers(2007, 2010, size=rows)  # the year
        tables.append(Table.of_numbers(block, names))
    unbound = [
        predictor.compute_columns({n: t.numbers[j] for j, n in enumerate(names)}, t.rows)  # type: ignore[index]
        for t in tables
    ]
    assert any(not np.array_equal(unbound[0], u[:1]) for u in unbound[1:])  # rows differ

    def calls(order: list[int]) -> list[bool]:
        return [np.array_equal(predictor.compute_typed(tables[i]), unbound[i]) for i in order]

    with ThreadPoolExecutor(2) as pool:
        forward = list(range(len(tables))) * 20
        results = list(pool.map(calls, [forward, forward[::-1]]))
    print(f"bound calls checked: {sum(map(len, results))}, shapes: {sorted(set(counts))}")
    assert all(all(r) for r in results)


class _SpikyClockPredictor(Predictor):
    """A model whose every other call is slowed by a busy neighbour, on a clock it moves itself:
    3 ms a call, 0.1 ms a row, and 5 ms more on the calls the neighbour takes."""

    runtime = "test"

    def __init__(self, metadata: Any, clock: list[float]) -> None:
        self.clock = clock
        self.calls = 0
        super().__init__(metadata)

    def compute_columns(self, columns: Any, rows: int) -> np.ndarray[Any, Any]:
        self.clock[0] += 0.003 + 0.0001 * rows + (0.005 if self.calls % 2 == 0 else 0.0)
        self.calls += 1
        return np.full((rows, len(self.classes)), 1.0 / len(self.classes))


def test_the_cost_estimate_is_the_models_not_its_neighbours(
    penguins_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher runs a call on the loop or on the model thread by this estimate: a busy
    start-up must not change it (here three of the five timed one-row calls are slowed)."""
    import service.runtimes.base as base

    clock = [0.0]
    monkeypatch.setattr(base.time, "perf_counter", lambda: clock[0])
    metadata = ModelStore(penguins_store).load(ModelStore(penguins_store).resolve()).metadata
    predictor = _SpikyClockPredictor(metadata, clock)
    print(f"fixed {predictor.fixed_cost * 1e3:.4f} ms, row {predictor.row_cost * 1e3:.4f} ms")
    assert predictor.fixed_cost == pytest.approx(0.0031)
    assert predictor.row_cost == pytest.approx(0.0001)


@pytest.mark.parametrize("rows", [1, 20, 500])  # a few values (read in Python), many (by sum)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_non_finite_output_is_found_and_no_finite_one(rows: int, dtype: Any) -> None:
    rng = np.random.default_rng(rows)
    fine = rng.random((rows, 3)).astype(dtype)
    check_finite(fine)
    # Finite values whose sum overflows: the fast check must fall to the exact one.
    huge = np.full((rows, 3), np.finfo(dtype).max, dtype=dtype)
    check_finite(huge)
    check_finite(fine[:, 0])  # a regressor's one output per row
    for bad in (np.inf, -np.inf, np.nan):
        for at in sorted({0, rows // 2, rows - 1}):
            broken = fine.copy()
            broken[at, 2] = bad
            with pytest.raises(NonFinitePredictionError) as caught:
                check_finite(broken)
            assert caught.value.rows == [at]
            with pytest.raises(NonFinitePredictionError) as caught:
                check_finite(broken[:, 2].copy())
            assert caught.value.rows == [at]


@pytest.mark.parametrize("rows", [1, 3, 200])
def test_each_label_is_the_first_largest_share_at_any_size(penguins_store: Path, rows: int) -> None:
    predictor = predictors(penguins_store)["onnx"]
    rng = np.random.default_rng(rows)
    shares = rng.random((rows, len(predictor.classes))).astype(np.float32)
    shares[0] = [0.4, 0.4, 0.2][: len(predictor.classes)]  # a tie: the first class, as argmax
    answers = predictor.shape(shares)
    expected = [predictor.classes[i] for i in shares.argmax(axis=1)]
    assert [a["label"] for a in answers] == expected
    assert answers[0]["label"] == predictor.classes[0]
    assert [list(a["probabilities"].values()) for a in answers] == shares.tolist()
    # The v2 answer's labels follow the same rule.
    tensors = TensorModel(FeatureSpec(predictor.metadata), 1000, "onnxruntime_onnx")
    outputs = {name: values for name, _, _, values in tensors.outputs(shares, None)}
    assert outputs["label"] == expected
