"""`python -m scoring`: a CSV in chunks, bad rows rejected with reasons, answers as /predict's."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scoring import batch
from scoring.cli import main
from service.app import create_app
from service.settings import Settings
from tests.conftest import PENGUINS_CSV, ROOT, write_csv

HEADER = ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
          "body_mass_g", "sex", "year"]  # fmt: skip
BASE = ["Adelie", "Dream", "40", "18", "190", "3500", "male", "2008"]


def penguin(**cells: str) -> list[str]:
    row = dict(zip(HEADER, BASE, strict=True))
    row.update(cells)
    return list(row.values())


# data row number -> (cells, what the reason must say)
BAD_ROWS = {
    3: (penguin(island="Mars"), "island: Input should be"),
    5: (penguin(bill_length_mm="forty"), "bill_length_mm: 'forty' is not a number"),
    6: (penguin(year="2008.5"), "year: Input should be a valid integer"),
    8: (penguin(year="NA"), "year: missing, but 'year' had no"),
    # A short row's missing trailing cells are gaps, as training reads them.
    9: (BASE[:5], "year: missing, but 'year' had no missing values in training, so it needs one"),
    10: ([*BASE, "extra"], "9 cells where the header has 8"),
    11: (penguin(bill_length_mm="inf"), "bill_length_mm: Input should be a finite number"),
    12: (penguin(bill_length_mm="1e16"), "bill_length_mm: Input should be less than or equal"),
}


def penguin_rows(count: int) -> list[list[str]]:
    with PENGUINS_CSV.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [rows[i % len(rows)] for i in range(count)]


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    """Good penguins (with gaps, and 2007.0 for a year) and the bad rows above."""
    rows = penguin_rows(14)
    rows[0][7] = "2007.0"
    for number, (cells, _) in BAD_ROWS.items():
        rows[number - 1] = cells
    return write_csv(tmp_path / "in.csv", HEADER, rows)


def score(store: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["--models-dir", str(store), "--model", "penguins", "--data", str(data),
                 "--out", str(out), *extra])  # fmt: skip


def test_bad_rows_are_rejected_and_good_rows_answer_as_predict(
    penguins_store: Path, mixed_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "CHUNK_ROWS", 4)  # several chunks: row numbers must carry on
    out = tmp_path / "out.csv"
    assert score(penguins_store, mixed_file, out) == 0
    rejects = read(tmp_path / "out.rejects.csv")
    assert [int(r["row"]) for r in rejects] == sorted(BAD_ROWS)
    for rejected in rejects:
        assert BAD_ROWS[int(rejected["row"])][1] in rejected["reason"]
    scored = read(out)
    inputs = read(mixed_file)
    good = [row for n, row in enumerate(inputs, start=1) if n not in BAD_ROWS]
    assert [{k: r[k] for k in HEADER} for r in scored] == good
    instances = [to_instance(row) for row in good]
    client = TestClient(create_app(Settings(model_dir=penguins_store)))
    with client:
        predictions = client.post("/predict", json={"instances": instances}).json()["predictions"]
    for row, prediction in zip(scored, predictions, strict=True):
        assert row["prediction"] == prediction["label"]
        for label, p in prediction["probabilities"].items():
            # Written in full; the graph computes in float32, whose last bits may differ with
            # how many rows share a call (chunks here, one request there).
            assert float(row[f"probability_{label}"]) == pytest.approx(p, rel=1e-6, abs=1e-9)


def to_instance(row: dict[str, str]) -> dict[str, Any]:
    def number(text: str) -> float | None:
        return None if text == "NA" else float(text)

    return {
        "island": row["island"],
        "bill_length_mm": number(row["bill_length_mm"]),
        "bill_depth_mm": number(row["bill_depth_mm"]),
        "flipper_length_mm": number(row["flipper_length_mm"]),
        "body_mass_g": number(row["body_mass_g"]),
        "sex": None if row["sex"] == "NA" else row["sex"],
        "year": int(float(row["year"])),
    }


def test_a_regressor_writes_its_value(regression_store: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", HEADER, penguin_rows(5))
    out = tmp_path / "out.csv"
    code = main(["--models-dir", str(regression_store), "--model", "mass:1", "--data", str(data),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = read(out)
    assert list(rows[0])[-1] == "prediction"
    assert all(float(r["prediction"]) > 1000 for r in rows)
    # Row 4 has no measurements. The penguins without a body mass (the target) have none either:
    # training left those rows out but counted their gaps, so the features take a missing
    # value and the row is scored, as scoring the training file itself must reject nothing.
    assert read(tmp_path / "out.rejects.csv") == []
    assert len(rows) == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing-file", "is not a file"),
        ("missing-column", "lacks the model's columns year"),
        ("clash", "already has columns named prediction"),
        ("empty", "is empty"),
        ("unknown-model", "no model named 'whales'"),
    ],
)
def test_bad_input_is_exit_2_and_writes_nothing(
    penguins_store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
    message: str,
) -> None:
    data = write_csv(tmp_path / "in.csv", HEADER, penguin_rows(3))
    model = "penguins"
    if change == "missing-file":
        data = tmp_path / "nowhere.csv"
    elif change == "missing-column":
        data = write_csv(tmp_path / "in.csv", HEADER[:-1], [r[:-1] for r in penguin_rows(3)])
    elif change == "clash":
        data = write_csv(
            tmp_path / "in.csv", [*HEADER, "prediction"], [[*r, "x"] for r in penguin_rows(3)]
        )
    elif change == "empty":
        data.write_text("")
    else:
        model = "whales"
    out = tmp_path / "out.csv"
    code = main(["--models-dir", str(penguins_store), "--model", model, "--data", str(data),
                 "--out", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) in (["in.csv"], [])


def test_an_unwritable_output_is_exit_4(
    penguins_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "in.csv", HEADER, penguin_rows(3))
    assert score(penguins_store, data, tmp_path / "no-such-folder" / "out.csv") == 4
    assert "cannot write" in capsys.readouterr().err


def test_extra_missing_markers(penguins_store: Path, tmp_path: Path) -> None:
    rows = penguin_rows(2)
    rows[1][2] = "?"
    data = write_csv(tmp_path / "in.csv", HEADER, rows)
    out = tmp_path / "out.csv"
    assert score(penguins_store, data, out) == 0
    assert len(read(tmp_path / "out.rejects.csv")) == 1
    assert score(penguins_store, data, out, "--missing-values", "?") == 0
    assert read(tmp_path / "out.rejects.csv") == []
    assert len(read(out)) == 2


def test_the_module_runs(penguins_store: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", HEADER, penguin_rows(30))
    result = subprocess.run(
        [sys.executable, "-m", "scoring", "--models-dir", str(penguins_store), "--model",
         "penguins:1", "--data", str(data), "--out", str(tmp_path / "out.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scored 30 of 30 rows with penguins version 1 (onnx)" in result.stdout


def test_the_arrow_path_and_the_row_by_row_path_give_the_same_answers_and_reasons(
    penguins_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow checks clean columns at once and sends doubtful ones cell by cell; a file it
    cannot read as the csv module does goes row by row. Both must agree on every row."""
    rows = penguin_rows(300)
    odd = {
        7: penguin(island="Mars"),
        40: penguin(bill_length_mm=" 41.5 "),  # Python reads it, Arrow's parser does not
        41: penguin(bill_length_mm="4_1"),  # so does this one
        80: penguin(year="2.008e3"),
        81: penguin(year="+2009"),
        120: penguin(sex="NA"),
        121: penguin(year="NA"),
        200: penguin(bill_depth_mm="-inf"),
        201: penguin(bill_depth_mm="0x11"),
        250: penguin(flipper_length_mm="1e15"),
        251: penguin(flipper_length_mm="1e16"),
    }
    for number, cells in odd.items():
        rows[number - 1] = cells
    data = write_csv(tmp_path / "in.csv", HEADER, rows)
    monkeypatch.setattr(batch, "CHUNK_ROWS", 64)  # several chunks
    assert score(penguins_store, data, tmp_path / "arrow.csv") == 0

    def irregular(self: Any, block_bytes: int = 0) -> Any:
        raise batch.IrregularTableError("forced")
        yield  # a generator, as the real one

    monkeypatch.setattr(batch.TableReader, "text_batches", irregular)
    assert score(penguins_store, data, tmp_path / "rows.csv") == 0
    by_arrow, by_row = read(tmp_path / "arrow.csv"), read(tmp_path / "rows.csv")
    assert len(by_arrow) == len(by_row) > 250
    for a, b in zip(by_arrow, by_row, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("probability_"):
                assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-12)
            else:
                assert a[key] == b[key], key
    rejects_arrow = read(tmp_path / "arrow.rejects.csv")
    assert rejects_arrow == read(tmp_path / "rows.rejects.csv")
    rejected = {int(r["row"]) for r in rejects_arrow}
    assert rejected == {7, 121, 200, 201, 251}  # "4_1" reads as 41 in Python, as in training
    print(f"{len(rows)} rows: {len(by_arrow)} scored and {len(rejected)} rejected alike")
