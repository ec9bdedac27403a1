"""Training and store defects found by this turn's review (issue 19): a version nothing can read,
a race between publishers, graphs that differ from run to run, provenance recorded two ways,
and prune taking a version a running server holds."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import training.cli
from modelstore import ModelStore, VersionInUseError
from modelstore.cli import main as store_main
from tests.conftest import PENGUINS_CSV, train, write_csv


def test_a_held_out_set_too_small_for_its_metrics_is_refused_before_fitting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[i, i % 5, 2.0 * i + 1] for i in range(40)]
    data = write_csv(tmp_path / "tiny.csv", ["a", "b", "y"], rows)
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'test_size = 0.02\n[data]\npath = "{data}"\ntarget = "y"\n'
        '[model]\ntask = "regression"\nestimator = "linear"\n'
    )
    models = tmp_path / "models"
    code = train(models, "--config", str(config))
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "error: test_size 0.02 holds out 1 of 40 rows, and regression metrics need at least 2: "
        "set test_size to 0.026 or more, or add rows" in err
    )
    assert "fitting" not in err
    assert not (models / "tiny").exists() or ModelStore(models).versions("tiny") == []
    config.write_text(config.read_text().replace("0.02", "0.026"))
    assert train(models, "--config", str(config)) == 0
    assert ModelStore(models).load(ModelStore(models).resolve("tiny")).metadata.metrics["r2"]


def test_metadata_no_reader_accepts_is_never_published(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    assert train(tmp_path / "models") == 0
    good = store.metadata(store.resolve("penguins"))

    def describe(version: int, artifact: Any) -> Any:
        # NaN is written as null, which every reader then refuses: the r2 of one held-out row.
        return good.model_copy(update={"version": version, "metrics": {"r2": float("nan")}})

    with pytest.raises(Exception, match=r"is not valid metadata: metrics\.r2"):
        store.publish("penguins", {"not": "a pipeline"}, describe)
    assert store.versions("penguins") == [1]
    assert [p.name for p in (tmp_path / "models" / "penguins").iterdir() if p.name[0] == "."] == [
        ".lock"
    ]


def test_a_staging_folder_another_publisher_removes_meanwhile_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    assert train(models) == 0
    orphan = models / "penguins" / ".tmp-0123456789abcdef"  # no owner file: an older release's
    orphan.mkdir()
    real_stat = Path.stat

    def vanishing(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == orphan:  # the other publisher deleted it between the listing and the stat
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", vanishing)
    assert train(models) == 0
    assert ModelStore(models).versions("penguins") == [1, 2]


def _hashes(version_dir: Path) -> dict[str, str]:
    meta = json.loads((version_dir / "metadata.json").read_text())
    recorded = {
        "model.joblib": meta["artifact"]["sha256"],
        "model.onnx": meta["onnx"]["sha256"],
        "report.html": meta["report"]["sha256"],
    }
    actual = {
        name: hashlib.sha256((version_dir / name).read_bytes()).hexdigest() for name in recorded
    }
    assert actual == recorded
    return actual


@pytest.mark.parametrize("config", [None, "random_forest.toml", "hist_gradient_boosting.toml"])
def test_the_same_training_twice_gives_the_same_bytes(tmp_path: Path, config: str | None) -> None:
    args = [] if config is None else ["--config", f"training/configs/{config}"]
    first, second = tmp_path / "a", tmp_path / "b"
    assert train(first, *args) == 0
    assert train(second, *args) == 0
    (name,) = ModelStore(first).names()
    one, two = _hashes(first / name / "1"), _hashes(second / name / "1")
    print(f"\n{name}: {one}")
    assert one == two


def test_provenance_from_an_image_is_recorded_as_local_training_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_git(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("git")

    full = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setenv("GIT_COMMIT", full)
    for text, dirty in (("false", False), ("true", True), ("", None)):
        monkeypatch.setenv("GIT_DIRTY", text)
        info = training.cli.git_info()
        assert (info.commit, info.dirty) == (full, dirty)


def test_the_makefile_passes_the_full_commit_and_dirty_flag_to_the_image() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "-e GIT_COMMIT=$(GIT_COMMIT) -e GIT_DIRTY=$(GIT_DIRTY)" in makefile
    assert "--build-arg REVISION=$(GIT_COMMIT)" in makefile


def test_prune_keeps_a_version_a_running_server_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    for _ in range(3):
        assert train(models) == 0
    store = ModelStore(models)
    served = store.hold(store.resolve("penguins", 1))  # as a live server does
    try:
        with pytest.raises(VersionInUseError, match="penguins version 1 is being served"):
            store.remove(store.resolve("penguins", 1))
        code = store_main(
            ["--models-dir", str(models), "prune", "penguins", "--keep", "1", "--yes"]
        )
        out = capsys.readouterr().out
        assert code == 0
        assert "removed penguins versions 2; kept 1, 3" in out
        assert "kept penguins version(s) 1: a running server holds them" in out
        assert store.versions("penguins") == [1, 3]
    finally:
        served.close()
    assert (
        store_main(["--models-dir", str(models), "prune", "penguins", "--keep", "1", "--yes"]) == 0
    )
    assert store.versions("penguins") == [3]


def test_the_readme_scoring_commands_work_on_a_fresh_store(
    penguins_store: Path, tmp_path: Path
) -> None:
    """What a newcomer has after `make run`: one version. Every scoring line runs as written."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = readme.split("## Batch scoring", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in section.splitlines() if line.strip()]
    assert any(line.startswith("make score") for line in lines)
    for line in lines:
        out = tmp_path / "scored.csv"
        command = line.replace("scored.csv", str(out))
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=root,
            env={"PATH": "/usr/bin:/bin", "MODEL_DIR": str(penguins_store), "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        assert out.read_text().count("\n") == PENGUINS_CSV.read_text().count("\n")
        out.unlink()
