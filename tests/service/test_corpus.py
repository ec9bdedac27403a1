"""Real tables nobody here wrote (statsmodels' datasets, shipped inside its wheel), and files
derived from them the way users' files differ: each is trained, served and scored, and every
path agrees with the pipeline offline (issue 20).

Per file: a verified graph; no row-number or counter column among the features; scoring the
training file itself rejects nothing; `/predict`, KServe v1, OIP v2 and scoring give the
pipeline's own labels (or values within the graph's recorded tolerance).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from modelstore import ModelStore
from modelstore.table import MISSING_MARKERS
from scoring.cli import main as score_main
from tests.conftest import train
from tests.service.conftest import ClientFactory
from training.data import load_dataset

pytestmark = pytest.mark.slow


def datasets() -> Path:
    spec = find_spec("statsmodels")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("statsmodels (a development dependency, for its data files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets"


@dataclass(frozen=True)
class Case:
    name: str
    target: str
    make: Any  # (datasets folder, tmp folder) -> the file to train on
    absent: tuple[str, ...] = ()  # columns that must not become features
    options: tuple[str, ...] = ()  # for training and scoring


def shipped(relative: str) -> Any:
    return lambda root, tmp: root / relative


def derived(relative: str, change: Any, suffix: str = ".csv") -> Any:
    def make(root: Path, tmp: Path) -> Path:
        frame = pd.read_csv(root / relative, sep=None, engine="python")
        out = tmp / (Path(relative).stem + "-derived" + suffix)
        change(frame, out)
        return out

    return make


def with_index(frame: pd.DataFrame, out: Path) -> None:
    frame.to_csv(out)  # pandas' default: the row numbers as a first column with no name


def latin1_with_bom_free_accents(frame: pd.DataFrame, out: Path) -> None:
    frame["state"] = frame["state"].str.replace("a", "á")
    frame.to_csv(out, index=False, encoding="latin-1")


def utf8_bom(frame: pd.DataFrame, out: Path) -> None:
    frame.to_csv(out, index=False, encoding="utf-8-sig")


AWKWARD = ["mean radius", "Min.Price", "MPG-city", "ratio:2", "2nd place", "Größe", "a b", "a_b"]


def awkward_names(frame: pd.DataFrame, out: Path) -> None:
    renamed = dict(zip(frame.columns[1:], AWKWARD, strict=False))
    frame.rename(columns=renamed).to_csv(out, index=False, sep="|")


def semicolons(frame: pd.DataFrame, out: Path) -> None:
    frame.to_csv(out, index=False, sep=";")


CASES = [
    Case("anes96 (tab, quoted names)", "'vote'", shipped("anes96/anes96.csv")),
    Case("modechoice (semicolons)", "choice", shipped("modechoice/modechoice.csv")),
    Case(
        "statecrime (text identifier)", "violent", shipped("statecrime/statecrime.csv"), ("state",)
    ),
    Case("grunfeld (string label)", "firm", shipped("grunfeld/grunfeld.csv")),
    Case("fair (quoted header)", "rate_marriage", shipped("fair/fair.csv")),
    Case("star98 (regression)", "MATHTOT", shipped("star98/star98.csv")),
    Case(
        "longley (row counter)",
        "TOTEMP",
        shipped("longley/longley.csv"),
        ("Obs",),
        ("--task", "regression"),  # 16 whole numbers would read as 16 classes
    ),
    Case("fertility (spaces, digits, gaps)", "2010", shipped("fertility/fertility.csv")),
    Case("ccard (regression, small)", "AVGEXP", shipped("ccard/ccard.csv")),
    Case(
        "grunfeld + pandas index",
        "firm",
        derived("grunfeld/grunfeld.csv", with_index),
        ("", "Unnamed: 0"),
    ),
    Case(
        "statecrime in Latin-1",
        "violent",
        derived("statecrime/statecrime.csv", latin1_with_bom_free_accents),
        ("state",),
    ),
    Case("heart with a BOM", "survival", derived("heart/heart.csv", utf8_bom)),
    Case("star98 renamed, pipes", "MATHTOT", derived("star98/star98.csv", awkward_names)),
    Case("fair re-separated", "rate_marriage", derived("fair/fair.csv", semicolons)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_real_table_trains_serves_and_scores_like_its_pipeline(
    case: Case, tmp_path: Path, make_client: ClientFactory
) -> None:
    data = case.make(datasets(), tmp_path)
    models = tmp_path / "models"
    extra = ["--encoding", "latin-1"] if "Latin-1" in case.name else []
    code = train(
        models,
        *["--data", str(data), "--target", case.target, "--name", "corpus"],
        *["--estimator", "random_forest", "--no-report", *extra, *case.options],
    )
    assert code == 0
    store = ModelStore(models)
    ref = store.resolve("corpus")
    meta = store.metadata(ref)
    names = [f.name for f in meta.features]
    assert meta.onnx is not None
    assert meta.onnx.verified, meta.onnx.reason
    assert not set(case.absent) & set(names), names
    assert "" not in names
    assert "Unnamed: 0" not in names

    # The pipeline offline, on the training file's own rows.
    dataset = load_dataset(
        data, case.target, meta.task, [], None, None, "latin-1" if extra else None, None
    )
    pipeline = joblib.load(ref.path / "model.joblib")
    rows = dataset.X[:60]
    offline = pipeline.predict(rows)
    instances = [
        {f.name: _json(row[i]) for i, f in enumerate(meta.features)} for row in rows.tolist()
    ]
    client = make_client(model_dir=models)
    native = client.post("/predict", json={"instances": instances})
    assert native.status_code == 200, native.text[:500]
    v1 = client.post("/v1/models/corpus:predict", json={"instances": instances})
    assert v1.status_code == 200, v1.text[:500]
    tensors = [
        {
            "name": f.name,
            "datatype": {"string": "BYTES", "boolean": "BOOL", "integer": "INT64"}.get(
                f.type, "FP64"
            ),
            "shape": [len(instances)],
            "data": [i[f.name] for i in instances],
        }
        for f in meta.features
    ]
    v2 = client.post("/v2/models/corpus/infer", json={"inputs": tensors})
    assert v2.status_code == 200, v2.text[:500]

    out = tmp_path / "scored.csv"
    scoring_args = ["--models-dir", str(models), "--data", str(data), "--out", str(out), *extra]
    assert score_main(scoring_args) == 0
    rejects = (tmp_path / "scored.rejects.csv").read_text(encoding="utf-8").splitlines()
    assert rejects[1:] == [], rejects[:3]
    with out.open(encoding="utf-8", newline="") as handle:
        # The rows training learned from: those with a target (dataset.X holds them in order).
        scored = [
            row["prediction"]
            for row in csv.DictReader(handle)
            if row[case.target] not in MISSING_MARKERS
        ][:60]
    assert len(scored) == len(rows)

    if meta.task == "classification":
        labels = [str(_json(v)) for v in offline.tolist()]
        assert [str(p["label"]) for p in native.json()["predictions"]] == labels
        assert [str(p) for p in v1.json()["predictions"]] == labels
        assert [str(v) for v in v2.json()["outputs"][0]["data"]] == labels
        assert scored == labels
        metric = f"accuracy {meta.metrics['accuracy']:.3f}"
    else:
        tolerance = meta.onnx.tolerance * 10
        got = np.array([p["value"] for p in native.json()["predictions"]])
        assert np.allclose(got, offline, rtol=0, atol=tolerance)
        assert np.allclose(v1.json()["predictions"], offline, rtol=0, atol=tolerance)
        assert np.allclose(v2.json()["outputs"][0]["data"], offline, rtol=0, atol=tolerance)
        assert np.allclose([float(v) for v in scored], offline, rtol=0, atol=tolerance)
        metric = f"r2 {meta.metrics['r2']:.3f}"
    print(
        f"\n{case.name}: {meta.data.rows} rows, {len(names)} features kept"
        f" ({len(meta.ignored_columns)} left out), {metric}, graph deviation"
        f" {meta.onnx.max_deviation:.2g}"
    )


def _json(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
