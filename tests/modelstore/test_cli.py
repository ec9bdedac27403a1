"""`python -m modelstore`: list, show, compare, verify and prune on real trained versions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelstore.cli import main
from tests.conftest import ROOT, train


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three versions of penguins: two alike but for the seed, one with a stronger penalty."""
    models = tmp_path_factory.mktemp("store")
    assert train(models, "--seed", "1") == 0
    assert train(models, "--seed", "2") == 0
    config = models.parent / "strong.toml"
    config.write_text(
        f'name = "penguins"\n[data]\npath = "{ROOT / "training/data/penguins.csv"}"\n'
        'target = "species"\n[model]\nestimator = "linear"\n[model.params]\nC = 0.01\n'
    )
    assert train(models, "--config", str(config)) == 0
    return models


@pytest.fixture
def copy(store: Path, tmp_path: Path) -> Path:
    """A private copy, for the commands that change or break the store."""
    target = tmp_path / "models"
    shutil.copytree(store, target)
    return target


def run(models: Path, *args: str) -> int:
    return main(["--models-dir", str(models), *args])


def test_list_shows_every_version(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(store, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "name",
        "version",
        "created",
        "(UTC)",
        "task",
        "estimator",
        "score",
        "runtimes",
    ]
    rows = [line.split() for line in lines[2:]]
    assert [r[:2] for r in rows] == [["penguins", "1"], ["penguins", "2"], ["penguins", "3"]]
    assert all("accuracy" in line and line.endswith("onnx, sklearn") for line in lines[2:])


def test_list_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "list") == 0
    assert capsys.readouterr().out.strip() == f"no models in {tmp_path}"


def test_show_a_version_and_its_metadata(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(store, "show", "penguins:2") == 0
    out = capsys.readouterr().out
    assert out.startswith("penguins version 2")
    assert "island             string   no        Biscoe, Dream, Torgersen" in out
    assert "model.onnx" in out
    assert run(store, "show", "penguins") == 0
    assert capsys.readouterr().out.startswith("penguins version 3")  # latest by default
    assert run(store, "show", "penguins:1", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == json.loads((store / "penguins/1/metadata.json").read_text())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "whales"], "no model named 'whales'"),
        (["show", "penguins:9"], "no version 9 of model 'penguins'"),
        (["show", "penguins:x"], "positive integer"),
        (["show", "../etc"], "model name"),
        (["compare", "penguins", "1", "7"], "no version 7"),
        (["verify", "whales"], "no model named 'whales'"),
        (["prune", "whales", "--keep", "1", "--yes"], "no model named 'whales'"),
        (["prune", "penguins", "--keep", "0", "--yes"], "--keep must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    store: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run(store, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_compare_marks_differences(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(store, "compare", "penguins", "1", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    by_label = {line[3:30].strip(): line for line in lines[2:-1]}
    assert by_label["param C"].startswith("*")
    assert by_label["param C"].split()[-2:] == ["(absent)", "0.01"]
    assert by_label["task"].startswith(" ")
    assert by_label["data sha256"].startswith(" ")
    assert by_label["feature island"].startswith(" ")
    assert lines[-1] == "(* marks a difference)"
    for line in lines:  # a changed metric carries its signed change
        if line.startswith("*  metric"):
            assert line.rstrip().endswith(")")


def test_verify_passes_then_catches_a_tampered_file(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(copy, "verify") == 0
    assert "3 of 3 versions verified" in capsys.readouterr().out
    graph = copy / "penguins/2/model.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    (copy / "penguins/3/notes.txt").write_text("not part of the version")
    assert run(copy, "verify") == 1
    out = capsys.readouterr().out
    assert "penguins:1  ok" in out
    assert "sha256 mismatch for" in out
    assert "penguins/2/model.onnx" in out
    assert "penguins/3/notes.txt is not recorded in the metadata" in out
    assert "1 of 3 versions verified" in out
    assert run(copy, "verify", "penguins:1") == 0


def test_verify_reports_broken_metadata(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "penguins/1/metadata.json").write_text("{")
    assert run(copy, "verify", "penguins") == 1
    assert "penguins/1/metadata.json is not valid metadata" in capsys.readouterr().out
    (copy / "penguins/2/model.joblib").unlink()
    assert run(copy, "verify", "penguins:2") == 1
    assert "cannot read" in capsys.readouterr().out


def test_prune_keeps_the_newest(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(copy, "prune", "penguins", "--keep", "1") == 2  # no terminal to ask: refused
    assert "pass --yes" in capsys.readouterr().err
    assert sorted(p.name for p in (copy / "penguins").iterdir() if p.name.isdigit()) == [
        "1",
        "2",
        "3",
    ]
    assert run(copy, "prune", "penguins", "--keep", "1", "--yes") == 0
    assert "removed penguins versions 1, 2; kept 3" in capsys.readouterr().out
    assert [p.name for p in (copy / "penguins").iterdir() if not p.name.startswith(".")] == ["3"]
    assert not [p for p in (copy / "penguins").iterdir() if p.name.startswith(".removed")]
    assert run(copy, "prune", "penguins", "--keep", "2", "--yes") == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert run(copy, "verify") == 0


def test_prune_that_cannot_write_is_exit_4_and_removes_nothing(
    copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: object, target: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    assert run(copy, "prune", "penguins", "--keep", "1", "--yes") == 4
    assert "cannot remove" in capsys.readouterr().err
    monkeypatch.undo()
    assert run(copy, "verify") == 0
    assert "3 of 3 versions verified" in capsys.readouterr().out


def test_the_module_runs(store: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelstore", "--models-dir", str(store), "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "penguins  3" in result.stdout
