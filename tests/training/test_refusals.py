"""Mistakes caught before the fit, and write failures that leave nothing behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

import modelstore.store
from tests.conftest import mixed_rows, train, write_csv


def errors_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "mixed.csv", ["size", "colour", "flag", "age", "label"], mixed_rows(80)
    )


def test_a_name_with_a_trailing_newline_is_refused_before_fitting(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    code = train(models, "--data", str(data), "--target", "label", "--name", "evil\n")
    err = capsys.readouterr().err
    assert code == 2
    assert errors_of(err) == [
        "error: invalid model name 'evil\\n': use letters, digits, '.', '_' or '-' (at most 64)"
    ]
    assert "fitting" not in err
    assert not models.exists()


def test_a_models_dir_under_a_file_is_refused_before_fitting(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train(Path("/dev/null/x"), "--data", str(data), "--target", "label")
    err = capsys.readouterr().err
    assert code == 4
    (line,) = errors_of(err)
    assert line == "error: cannot write models into /dev/null/x: /dev/null is not a directory"
    assert "fitting" not in err
    assert "Traceback" not in err


def test_a_full_disk_while_publishing_is_one_line_and_leaves_nothing(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, payload: bytes) -> None:
        path.write_bytes(payload[:10])  # a partial file, as a full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(modelstore.store, "_write_durably", full)
    models = tmp_path / "models"
    code = train(models, "--data", str(data), "--target", "label", "--name", "full")
    err = capsys.readouterr().err
    assert code == 4
    (line,) = errors_of(err)
    assert line == f"error: cannot write model 'full' into {models}: No space left on device; " + (
        "nothing published"
    )
    assert "Traceback" not in err
    assert list(models.iterdir()) == []  # no version, no staging folder, no empty model folder


def test_a_gate_metric_for_the_other_task_is_a_config_error_before_fitting(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gate.toml"
    config.write_text(
        f'[data]\npath = "{data}"\ntarget = "label"\n[gate]\nmetric = "rmse"\nthreshold = 1.0\n'
    )
    models = tmp_path / "models"
    code = train(models, "--config", str(config))
    err = capsys.readouterr().err
    assert code == 2
    (line,) = errors_of(err)
    assert "gate metric rmse does not apply to classification" in line
    assert "fitting" not in err
    assert not models.exists()


def test_a_store_locked_too_long_is_exit_5_and_leaves_nothing(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    monkeypatch.setattr(modelstore.store, "LOCK_TIMEOUT_SECONDS", 0.3)
    folder = tmp_path / "models" / "held"
    folder.mkdir(parents=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a publisher stuck in another process
        code = train(
            tmp_path / "models", "--data", str(data), "--target", "label", "--name", "held"
        )
    err = capsys.readouterr().err
    assert code == 5
    (line,) = errors_of(err)
    assert "is locked by another process (waited 0.3s" in line
    assert line.endswith("try again later; nothing published")
    assert "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


def test_a_read_only_store_is_one_line_and_exit_4(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only filesystem (root can write through permissions, so the error is simulated)."""
    real_open = Path.open

    def read_only(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if any(c in mode for c in "wxa") and "models" in self.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", read_only)
    models = tmp_path / "models"
    code = train(models, "--data", str(data), "--target", "label", "--name", "ro")
    err = capsys.readouterr().err
    assert code == 4
    (line,) = errors_of(err)
    assert line == f"error: cannot write models into {models}: Read-only file system"
    assert "Traceback" not in err
    assert not (models / "ro").exists()


def test_a_data_file_gone_while_reading_is_one_line_and_exit_2(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = Path.open

    def vanish(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == data:
            path.unlink()  # deleted between the existence check and the read
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", vanish)
    models = tmp_path / "models"
    code = train(models, "--data", str(data), "--target", "label")
    err = capsys.readouterr().err
    assert code == 2
    (line,) = errors_of(err)
    assert line == f"error: cannot read data file {data}: No such file or directory"
    assert "Traceback" not in err
    assert not models.exists()
