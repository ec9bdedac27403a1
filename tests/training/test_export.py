"""Compiled graphs: every estimator family converts and passes its check, on two data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import training.export
from modelstore import ModelStore, sha256_file
from tests.conftest import PENGUINS_CSV, mixed_rows, train, write_csv

FAMILIES = ["linear", "random_forest", "hist_gradient_boosting"]


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every column kind with gaps, a string label and a numeric target to regress."""
    rows = []
    for i, (size, colour, flag, age, label) in enumerate(mixed_rows(240, seed=5)):
        number = float(size) if size != "" else 5.0
        rows.append([size, colour, flag, age, label, round(3 * number + int(age) / 10 + i % 3, 3)])
    header = ["size", "colour", "flag", "age", "label", "mass"]
    return write_csv(tmp_path_factory.mktemp("mixed") / "mixed.csv", header, rows)


def config_for(folder: Path, data: Path, target: str, drop: str, family: str) -> Path:
    config = folder / f"{family}-{target}.toml"
    config.write_text(
        f'[data]\npath = "{data}"\ntarget = "{target}"\ndrop = ["{drop}"]\n'
        f'[model]\nestimator = "{family}"\nrequire_onnx = true\n'
    )
    return config


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("data", "target", "drop", "task"),
    [
        ("penguins", "species", "year", "classification"),
        ("penguins", "body_mass_g", "year", "regression"),
        ("mixed", "label", "mass", "classification"),
        ("mixed", "mass", "label", "regression"),
    ],
)
def test_every_family_compiles_and_passes_its_check(
    tmp_path: Path,
    mixed_csv: Path,
    capsys: pytest.CaptureFixture[str],
    family: str,
    data: str,
    target: str,
    drop: str,
    task: str,
) -> None:
    csv_path = PENGUINS_CSV if data == "penguins" else mixed_csv
    config = config_for(tmp_path, csv_path, target, drop, family)
    models = tmp_path / "models"
    assert train(models, "--config", str(config), "--name", "m") == 0
    out = capsys.readouterr().out
    store = ModelStore(models)
    loaded = store.load(store.resolve())
    compiled = loaded.metadata.onnx
    assert loaded.metadata.task == task
    assert compiled is not None
    assert compiled.verified, compiled.reason
    assert compiled.max_deviation is not None
    assert compiled.max_deviation <= compiled.tolerance
    assert compiled.checked_rows == loaded.metadata.data.rows
    assert compiled.synthetic_rows > 0
    assert compiled.labels_identical is (True if task == "classification" else None)
    assert compiled.sha256 == sha256_file(loaded.ref.path / "model.onnx")
    assert "onnx      verified on" in out
    print(f"{data} {target} {family}: largest deviation {compiled.max_deviation:.3g}")


def perturbed(convert: Any) -> Any:
    """A converter whose graph answers differently: the linear model's weights scaled by 1.5."""

    def wrong(pipeline: Any, features: Any, task: str) -> bytes:
        import onnx
        from onnx import numpy_helper

        model = onnx.load_from_string(convert(pipeline, features, task))
        for index, constant in enumerate(model.graph.initializer):
            if constant.name.startswith("coef"):
                scaled = numpy_helper.to_array(constant) * 1.5
                model.graph.initializer[index].CopyFrom(
                    numpy_helper.from_array(scaled, constant.name)
                )
        graph: bytes = model.SerializeToString()
        return graph

    return wrong


def test_a_graph_that_answers_differently_is_refused_and_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(training.export, "convert", perturbed(training.export.convert))
    models = tmp_path / "models"
    assert train(models) == 0  # still published, without a graph
    err = capsys.readouterr().err
    assert "note: published without an ONNX graph: the graph predicts a different label" in err
    store = ModelStore(models)
    ref = store.resolve()
    meta = store.metadata(ref)
    assert meta.onnx is not None
    assert not meta.onnx.verified
    assert meta.onnx.labels_identical is False
    assert meta.onnx.max_deviation is not None
    assert meta.onnx.max_deviation > meta.onnx.tolerance
    assert not (ref.path / "model.onnx").exists()


def test_require_onnx_turns_a_failed_check_into_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(pipeline: Any, features: Any, task: str) -> bytes:
        raise RuntimeError("Unable to find a shape calculator for FancyEstimator")

    monkeypatch.setattr(training.export, "convert", broken)
    config = tmp_path / "strict.toml"
    config.write_text(
        f'[data]\npath = "{PENGUINS_CSV}"\ntarget = "species"\n[model]\nrequire_onnx = true\n'
    )
    models = tmp_path / "models"
    assert train(models, "--config", str(config)) == 3
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: no verified ONNX graph (conversion failed: Unable to find a shape calculator "
        "for FancyEstimator) and [model] require_onnx is set; nothing published"
    ]
    assert not models.exists()
