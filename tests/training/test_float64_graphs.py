"""Graphs that compute like the pipeline (issue 21): values between the training values, at
every split threshold and where float32 cannot tell integers apart get the same label (and the
same value) from the compiled graph, the pickled pipeline and both runtimes.

The reproduction: an integer `account` near 1e9 (float32 steps by 64 there). A float32 graph
served `low` for 1000049502 where scikit-learn said `high`; each family, classifier and
regressor, is queried at every integer around each of its boundaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelstore import LoadedModel, ModelStore
from service.runtimes.base import Table
from service.runtimes.onnx import OnnxPredictor
from service.runtimes.sklearn import SklearnPredictor
from tests.conftest import train, write_csv
from training.probes import tree_splits

BASE = 1_000_000_000
CUT = BASE + 49_503  # the label changes here: between two integers float32 cannot separate
FAMILIES = ["linear", "random_forest", "hist_gradient_boosting"]


@pytest.fixture(scope="module")
def accounts_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(21)
    accounts = BASE + rng.integers(0, 100_000, 600)
    accounts[:40] = CUT + rng.integers(-60, 60, 40)  # dense around the cut: splits land there
    rows = [
        [int(a), "high" if a > CUT else "low", float(a > CUT) * 10.0 + (a - BASE) / 1e5]
        for a in accounts
    ]
    folder = tmp_path_factory.mktemp("accounts")
    return write_csv(folder / "accounts.csv", ["account", "level", "score"], rows)


def trained(folder: Path, data: Path, family: str, target: str, drop: str) -> LoadedModel:
    config = folder / "config.toml"
    config.write_text(
        f'[data]\npath = "{data}"\ntarget = "{target}"\ndrop = ["{drop}"]\n'
        '[data.types]\naccount = "integer"\n'
        f'[model]\nestimator = "{family}"\nrequire_onnx = true\n'
    )
    models = folder / "models"
    assert train(models, "--config", str(config), "--name", "accounts") == 0
    store = ModelStore(models)
    return store.load(store.resolve("accounts"))


def boundaries(loaded: LoadedModel) -> list[float]:
    """Where the model's answer can change along `account`: each split threshold of a tree
    model; for a linear model, where its decision (or the cut) lies."""
    model = loaded.estimator.named_steps["model"]
    found = [t for column, t in tree_splits(model) if column == 0]
    if found or not hasattr(model, "classes_"):
        return found or [float(CUT)]
    # Logistic regression on scaled `account`: the decision is zero at mean - b * scale / w.
    scaler = loaded.estimator.named_steps["preprocess"].named_transformers_["numeric"]["scale"]
    weight, bias = float(model.coef_[0, 0]), float(model.intercept_[0])
    return [float(scaler.mean_[0] - bias * scaler.scale_[0] / weight)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("target", "drop"), [("level", "score"), ("score", "level")])
def test_every_integer_around_every_boundary_answers_as_the_pipeline(
    tmp_path: Path, accounts_csv: Path, family: str, target: str, drop: str
) -> None:
    loaded = trained(tmp_path, accounts_csv, family, target, drop)
    compiled = loaded.metadata.onnx
    assert compiled is not None
    assert compiled.verified, compiled.reason
    assert compiled.precision == "float64"
    assert compiled.checks is not None
    assert ("thresholds" in compiled.checks) is (family != "linear")
    assert loaded.graph is not None
    around = sorted(
        {int(np.floor(b)) + step for b in boundaries(loaded) for step in range(-40, 41)}
    )
    queries: list[Any] = around[:20_000]
    table = Table({"account": queries}, len(queries))
    graph = OnnxPredictor(loaded.metadata, loaded.graph).compute(table)
    pipeline_runtime = SklearnPredictor(loaded.metadata, loaded.estimator).compute(table)
    matrix = np.array(queries, dtype=object).reshape(-1, 1)
    if target == "level":
        expected = loaded.estimator.predict_proba(matrix).argmax(axis=1)
        differ = int((graph.argmax(axis=1) != expected).sum())
        runtimes_differ = int((graph.argmax(axis=1) != pipeline_runtime.argmax(axis=1)).sum())
        deviation = float(np.abs(graph - pipeline_runtime).max())
    else:
        expected_values = loaded.estimator.predict(matrix)
        differ = int((np.abs(graph - expected_values) > 1e-9 * np.abs(expected_values)).sum())
        runtimes_differ = int((graph != pipeline_runtime).sum())
        deviation = float(np.abs(graph - pipeline_runtime).max())
    print(
        f"{family} {target}: {len(queries)} integers around {len(boundaries(loaded))} "
        f"boundaries, {differ} differ from the pipeline, {runtimes_differ} between runtimes, "
        f"largest deviation {deviation:.3g}"
    )
    assert differ == 0
    if target == "level":
        assert runtimes_differ == 0


def test_the_reported_account_gets_the_pipelines_label(tmp_path: Path, accounts_csv: Path) -> None:
    """The issue's example: HistGradientBoosting, 1000049502 and its neighbours."""
    loaded = trained(tmp_path, accounts_csv, "hist_gradient_boosting", "level", "score")
    assert loaded.graph is not None
    queries: list[Any] = [CUT - 3, CUT - 1, CUT, CUT + 1, CUT + 3]
    table = Table({"account": queries}, len(queries))
    classes = loaded.metadata.classes or []
    graph = OnnxPredictor(loaded.metadata, loaded.graph).compute(table).argmax(axis=1)
    sklearn = loaded.estimator.predict(np.array(queries, dtype=object).reshape(-1, 1))
    assert [classes[i] for i in graph] == list(sklearn)


def test_the_checks_per_kind_are_shown_where_users_look(
    tmp_path: Path, accounts_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from modelstore.cli import main as modelstore_main
    from service.app import create_app
    from service.settings import Settings

    loaded = trained(tmp_path, accounts_csv, "random_forest", "level", "score")
    capsys.readouterr()
    models = tmp_path / "models"
    assert modelstore_main(["--models-dir", str(models), "show", "accounts"]) == 0
    shown = capsys.readouterr().out
    assert "(float64)" in shown
    assert "graph checked against the pipeline:" in shown
    for kind in ("data", "edges", "thresholds", "large integers", "random"):
        assert any(line.lstrip().startswith(kind) for line in shown.splitlines()), kind
    settings = Settings(model_dir=models, model_name="accounts")
    with TestClient(create_app(settings)) as client:
        check = client.get("/v2/models/accounts").json()["parameters"]["graph_check"]
    assert check["precision"] == "float64"
    assert check["rows"]["thresholds"]["rows"] > 0
    assert check["rows"]["thresholds"]["labels_identical"] is True
    compiled = loaded.metadata.onnx
    assert compiled is not None
    assert check["max_deviation"] == compiled.max_deviation


def test_a_version_compiled_before_keeps_its_float32_graph(
    tmp_path: Path, accounts_csv: Path
) -> None:
    """Stores written before hold float32 graphs: the runtime feeds each graph the type its
    inputs declare."""
    skl2onnx = pytest.importorskip("skl2onnx")
    del skl2onnx
    from bench.precision import float32_graph

    loaded = trained(tmp_path, accounts_csv, "linear", "level", "score")
    meta = loaded.metadata
    old = float32_graph(loaded.estimator, list(meta.features), meta.task)
    queries: list[Any] = [BASE + 10, BASE + 90_000]
    table = Table({"account": queries}, len(queries))
    answer = OnnxPredictor(meta, old).compute(table)
    expected = loaded.estimator.predict_proba(np.array(queries, dtype=object).reshape(-1, 1))
    assert np.abs(answer - expected).max() < 1e-4
