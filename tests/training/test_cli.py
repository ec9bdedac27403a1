"""The training CLI end to end: real CSVs in, real versions (or clear refusals) out."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import joblib
import numpy as np
import pytest

from modelstore import ModelStore, sha256_file
from tests.conftest import PENGUINS_CSV, ROOT, mixed_rows, train, write_csv


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_default_training_end_to_end(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = subprocess.run(
        [sys.executable, "-m", "training", "--models-dir", str(models)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for word in (
        "penguins version 1",
        "accuracy",
        "f1_macro",
        "roc_auc",
        str(models / "penguins" / "1"),
    ):
        assert word in result.stdout
    assert "fitting linear classification" in result.stderr
    version = models / "penguins" / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        "metadata.json",
        "model.joblib",
        "model.onnx",
        "report.html",
    ]
    assert str(version / "report.html") in result.stdout
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["task"] == "classification"
    assert meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert [f["name"] for f in meta["features"]] == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
        "year",
    ]
    assert meta["metrics"]["accuracy"] >= 0.9
    assert meta["data"]["sha256"] == sha256_file(PENGUINS_CSV)
    assert meta["data"]["rows"] == 344
    assert set(meta["environment"]) >= {"python", "scikit-learn", "numpy", "joblib"}
    assert meta["git"].keys() == {"commit", "dirty"}


def test_artifact_sha256_matches_file(penguins_store: Path) -> None:
    version = penguins_store / "penguins" / "1"
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["artifact"]["sha256"] == sha256_file(version / "model.joblib")
    assert meta["artifact"]["bytes"] == (version / "model.joblib").stat().st_size


def test_pipeline_accepts_plain_2d_rows_without_pandas(penguins_store: Path) -> None:
    """Serving sends rows as a plain object array in feature order, with NaN for gaps."""
    version = penguins_store / "penguins" / "1"
    meta = json.loads((version / "metadata.json").read_text())
    model = joblib.load(version / "model.joblib")
    names = [f["name"] for f in meta["features"]]
    example = [meta["example"][n] for n in names]
    gappy = ["Dream", math.nan, 17.0, math.nan, 3500.0, math.nan, 2008]
    rows = np.array([example, gappy], dtype=object)
    proba = model.predict_proba(rows)
    assert proba.shape == (2, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert list(model.predict(rows)) == [meta["classes"][i] for i in proba.argmax(axis=1)]
    nested_list = model.predict([example])  # a list of lists works too
    assert nested_list[0] in meta["classes"]


def test_mixed_types_with_missing_values(mixed_store: Path) -> None:
    ref = ModelStore(mixed_store).resolve("mixed")
    loaded = ModelStore(mixed_store).load(ref)
    kinds = {f.name: (f.type, f.nullable) for f in loaded.metadata.features}
    assert kinds == {
        "size": ("number", True),
        "colour": ("string", True),
        "flag": ("boolean", True),
        "age": ("integer", False),
    }
    assert loaded.metadata.classes == ["big", "small"]
    assert loaded.metadata.metrics["accuracy"] > 0.8
    row = np.array([[8.0, math.nan, math.nan, 40]], dtype=object)
    assert loaded.estimator.predict(row)[0] in ("big", "small")


def test_regression_csv(tmp_path: Path) -> None:
    rows = [[x, x * 0.5, ["a", "b"][x % 2], 3.0 * x + 1.5] for x in range(60)]
    data = write_csv(tmp_path / "reg.csv", ["x", "half", "kind", "y"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "y") == 0
    meta = (
        ModelStore(tmp_path / "models")
        .load(ModelStore(tmp_path / "models").resolve("reg"))
        .metadata
    )
    assert meta.task == "regression"
    assert meta.classes is None
    assert set(meta.metrics) == {"rmse", "mae", "r2"}
    assert meta.metrics["r2"] > 0.5


def test_numeric_labels_with_few_values_are_classes(tmp_path: Path) -> None:
    rows = [[x, int(x > 20)] for x in ((i * 7) % 40 for i in range(40))]  # not a row counter
    data = write_csv(tmp_path / "binary.csv", ["x", "y"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "y", "--name", "bin") == 0
    meta = (
        ModelStore(tmp_path / "models")
        .load(ModelStore(tmp_path / "models").resolve("bin"))
        .metadata
    )
    assert meta.task == "classification"
    assert meta.classes == [0, 1]


def test_same_inputs_reproduce_predictions_and_metadata(tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = str(ROOT / "training" / "configs" / "random_forest.toml")
    assert train(models, "--config", config) == 0
    assert train(models, "--config", config) == 0
    first, second = (models / "penguins-rf" / v / "metadata.json" for v in ("1", "2"))
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    # The report shows the version and the time; its plots must still be the same.
    for volatile in ("created_at", "git", "version", "report"):
        a.pop(volatile), b.pop(volatile)
    assert a == b
    pages = [(models / "penguins-rf" / v / "report.html").read_text() for v in ("1", "2")]
    assert re.findall(r"base64,[^\"]+", pages[0]) == re.findall(r"base64,[^\"]+", pages[1])
    assert a["artifact"]["sha256"] == b["artifact"]["sha256"]
    texts = [
        first.read_text().replace('"version": 1', '"version": 2'),
        second.read_text(),
    ]
    for text, page in zip(texts, pages, strict=True):
        assert sha256(page.encode()).hexdigest() in text
    report_sha = re.compile(r'"sha256": "[0-9a-f]{64}",\n\s*"bytes": \d+\n\s*}', re.M)
    kept = [report_sha.sub("", t).splitlines()[5:] for t in texts]
    assert kept[0] == kept[1]


def test_two_concurrent_trainings_get_two_complete_versions(tmp_path: Path) -> None:
    models = tmp_path / "models"
    command = [sys.executable, "-m", "training", "--models-dir", str(models)]
    procs = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    store = ModelStore(models)
    assert store.versions("penguins") == [1, 2]
    for version in (1, 2):
        assert store.load(store.resolve("penguins", version)).metadata.version == version


BAD_CASES = {
    "missing file": (["--data", "{tmp}/absent.csv", "--target", "y"], "not found"),
    "empty file": (["--data", "{tmp}/empty.csv", "--target", "y"], "is empty"),
    "header only": (["--data", "{tmp}/header.csv", "--target", "y"], "no rows"),
    "unreadable bytes": (["--data", "{tmp}/binary.csv", "--target", "y"], "is not UTF-8 text"),
    "unknown target": (
        ["--data", "{tmp}/good.csv", "--target", "nope"],
        "target column 'nope' not in",
    ),
    "single value": (["--data", "{tmp}/single.csv", "--target", "y"], "single value"),
    "all-missing target": (["--data", "{tmp}/nolabel.csv", "--target", "y"], "has no values"),
    "non-numeric regression": (["--config", "{tmp}/regress.toml"], "not numeric"),
    "unknown config key": (["--config", "{tmp}/unknown_key.toml"], "bogus: unknown key"),
    "unknown estimator": (["--config", "{tmp}/unknown_estimator.toml"], "model.estimator"),
    "unknown parameter": (["--config", "{tmp}/unknown_param.toml"], "unknown parameter(s) foo"),
    "quality gate": (["--config", "{tmp}/gate.toml"], "quality gate not met"),
}


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Path:
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("a,b,y\n")
    (tmp_path / "binary.csv").write_bytes(b"a,y\n\xff\xfe\x00,1\n")
    good = write_csv(
        tmp_path / "good.csv",
        ["a", "y"],
        [[(i * 7) % 30, "p" if i % 2 else "q"] for i in range(30)],  # shuffled: not a row counter
    )
    write_csv(tmp_path / "single.csv", ["a", "y"], [[i, "same"] for i in range(30)])
    write_csv(tmp_path / "nolabel.csv", ["a", "y"], [[i, ""] for i in range(30)])
    (tmp_path / "regress.toml").write_text(
        f'[data]\npath = "{good}"\ntarget = "y"\n[model]\ntask = "regression"\n'
    )
    (tmp_path / "unknown_key.toml").write_text(
        f'bogus = 1\n[data]\npath = "{good}"\ntarget = "y"\n'
    )
    (tmp_path / "unknown_estimator.toml").write_text(
        f'[data]\npath = "{good}"\ntarget = "y"\n[model]\nestimator = "svm"\n'
    )
    (tmp_path / "unknown_param.toml").write_text(
        f'[data]\npath = "{good}"\ntarget = "y"\n[model]\nestimator = "random_forest"\n'
        "[model.params]\nfoo = 1\n"
    )
    noise = write_csv(
        tmp_path / "noise.csv",
        ["a", "y"],
        [[(i * 7919) % 13, "p" if (i * 31) % 7 < 3 else "q"] for i in range(80)],
    )
    (tmp_path / "gate.toml").write_text(
        f'[data]\npath = "{noise}"\ntarget = "y"\n[gate]\nmetric = "accuracy"\nthreshold = 0.99\n'
    )
    return tmp_path


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(
    case: str, bad_inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = BAD_CASES[case]
    models = bad_inputs / "models"
    models.mkdir()
    (models / "keep.txt").write_text("untouched")
    before = snapshot(models)
    code = train(models, *(a.format(tmp=bad_inputs) for a in args))
    captured = capsys.readouterr()
    assert code == (3 if case == "quality gate" else 2)
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    assert expected in errors[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert snapshot(models) == before


def test_bad_input_through_the_real_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "--data",
            str(tmp_path / "none.csv"),
            "--target",
            "y",
            "--models-dir",
            str(tmp_path / "models"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: data file {tmp_path / 'none.csv'} not found"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists()


def test_identifier_columns_are_ignored(tmp_path: Path) -> None:
    rows = [[f"id-{i}", i % 5, "a" if i % 5 > 2 else "b"] for i in range(40)]
    data = write_csv(tmp_path / "ids.csv", ["id", "x", "y"], rows)
    assert train(tmp_path / "models", "--data", str(data), "--target", "y") == 0
    meta = ModelStore(tmp_path / "models").load(ModelStore(tmp_path / "models").resolve()).metadata
    assert [f.name for f in meta.features] == ["x"]


def test_mixed_rows_helper_is_varied() -> None:
    rows = mixed_rows(50)
    assert {r[4] for r in rows} == {"big", "small"}


def test_skip_if_present_trains_only_into_an_empty_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    assert train(models, "--skip-if-present") == 0
    assert ModelStore(models).versions("penguins") == [1]
    assert train(models, "--skip-if-present") == 0
    assert ModelStore(models).versions("penguins") == [1]
    assert "already holds a model; not training" in capsys.readouterr().err
