"""Batch scoring defects found by this turn's review (issue 19): overflowing predictions, a full
disk, a file that is not UTF-8, and advice that names an option scoring really has."""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoring.cli import main
from service.runtimes.base import NON_FINITE_REASON
from tests.conftest import PENGUINS_CSV, train_overflowing_ridge, write_csv


def test_a_prediction_that_overflows_is_rejected_with_the_services_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The overflowing ridge of tests/service/test_review_defects.py: 1e15 inputs give infinity.
    train_overflowing_ridge(tmp_path)
    queries = write_csv(tmp_path / "q.csv", ["a", "b"], [[1e-149, 0.02], [1e15, -1e15], [0, 0]])
    out = tmp_path / "out.csv"
    code = main(
        ["--models-dir", str(tmp_path / "models"), "--data", str(queries), "--out", str(out)]
    )
    assert code == 0
    scored = list(csv.reader(out.read_text().splitlines()))
    rejects = list(csv.reader((tmp_path / "out.rejects.csv").read_text().splitlines()))
    assert [r[:2] for r in scored[1:]] == [["1e-149", "0.02"], ["0", "0"]]
    assert all("inf" not in cell for row in scored for cell in row)
    assert rejects[1][:2] == ["2", NON_FINITE_REASON]
    assert "rejected 1 rows" in capsys.readouterr().out


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_leaves_neither_output_file(
    penguins_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Enough rows to pass a 256 KB disk with the scored file, a few bad ones for the rejects.
    with PENGUINS_CSV.open() as handle:
        rows = list(csv.reader(handle))
    big = [rows[0]] + [r for r in rows[1:] if "NA" not in r] * 10
    big += [[*rows[1][:1], "Mars", *rows[1][2:]]] * 3
    data = tmp_path / "big.csv"
    with data.open("w", newline="") as handle:
        csv.writer(handle).writerows(big)
    with small_disk(tmp_path / "disk", "256k") as disk:
        out = disk / "scored.csv"
        code = main(["--models-dir", str(penguins_store), "--data", str(data), "--out", str(out)])
        left = sorted(p.name for p in disk.iterdir())
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.startswith("error: cannot write ")
    assert "No space left on device" in err
    assert left == []  # neither scored.csv nor scored.rejects.csv, and no hidden leftovers


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("latin-1", "Île Dream"), ("utf-16", "Dream")],
)
def test_a_file_that_is_not_utf8_is_one_line_and_exit_2(
    penguins_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    encoding: str,
    text: str,
) -> None:
    source = PENGUINS_CSV.read_text(encoding="utf-8").replace("Dream", text)
    data = tmp_path / "latin.csv"
    data.write_bytes(source.encode(encoding))
    out = tmp_path / "out.csv"
    code = main(["--models-dir", str(penguins_store), "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {data} is not UTF-8 text")
    assert err.count("\n") == 1
    assert not out.exists()


def test_a_byte_order_mark_is_not_part_of_the_first_column(
    penguins_store: Path, tmp_path: Path
) -> None:
    data = tmp_path / "bom.csv"
    body = PENGUINS_CSV.read_text(encoding="utf-8")
    columns = body.splitlines()[0].split(",")
    # The first column a feature, so a BOM glued to its name would make it "missing".
    reordered = "\n".join(
        ",".join([cells[1], cells[0], *cells[2:]])
        for cells in (line.split(",") for line in body.splitlines())
    )
    assert columns[1] == "island"
    data.write_bytes("\ufeff".encode() + reordered.encode())
    out = tmp_path / "out.csv"
    assert main(["--models-dir", str(penguins_store), "--data", str(data), "--out", str(out)]) == 0


def test_with_several_models_the_advice_names_the_option_that_works(
    penguins_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    shutil.copytree(penguins_store, models)
    shutil.copytree(models / "penguins", models / "other")
    code = main(
        ["--models-dir", str(models), "--data", str(PENGUINS_CSV), "--out", str(tmp_path / "o.csv")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "choose one with --model NAME[:VERSION]" in err
    assert "MODEL_NAME" not in err


def test_when_the_last_flush_fails_neither_file_appears(
    penguins_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_fsync = os.fsync

    def full_at_the_end(fd: int) -> None:
        # The scored file's last bytes cannot be written, as on a disk that fills up just as
        # the last rows are flushed: the rejects file is whole, and must not appear alone.
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".out.csv."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_the_end)
    data = tmp_path / "in.csv"
    shutil.copy(PENGUINS_CSV, data)
    with data.open("a") as handle:
        handle.write("Adelie,Mars,40,18,190,3500,male,2008\n")  # one reject
    code = main(
        [
            "--models-dir",
            str(penguins_store),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 4, err
    assert "No space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
