"""Parquet tables: read by the same reader as CSV (typed values become the text a CSV holds),
so a Parquet file trains the same model and scores to the same answers (issue 20)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as parquet

from modelstore import ModelStore
from scoring.cli import main as score_main
from tests.conftest import PENGUINS_CSV, train


def test_a_parquet_file_trains_and_scores_as_its_csv_does(tmp_path: Path) -> None:
    frame = pd.read_csv(PENGUINS_CSV)  # typed columns, NaN for gaps, as users' files are
    frame.to_parquet(tmp_path / "penguins.parquet")  # with pandas' index stored as a column
    from_csv, from_parquet = tmp_path / "a", tmp_path / "b"
    assert train(from_csv, "--data", str(PENGUINS_CSV), "--target", "species") == 0
    assert (
        train(from_parquet, "--data", str(tmp_path / "penguins.parquet"), "--target", "species")
        == 0
    )

    def features(models: Path) -> list[dict[str, object]]:
        store = ModelStore(models)
        meta = store.metadata(store.resolve("penguins"))
        assert meta.onnx is not None
        assert meta.onnx.verified
        return [json.loads(f.model_dump_json()) for f in meta.features]

    assert features(from_parquet) == features(from_csv)

    out_csv, out_parquet = tmp_path / "scored.csv", tmp_path / "scored.parquet"
    assert score_main(["--models-dir", str(from_csv), "--data", str(PENGUINS_CSV), "--out",
                       str(out_csv)]) == 0  # fmt: skip
    assert score_main(["--models-dir", str(from_csv), "--data", str(tmp_path / "penguins.parquet"),
                       "--out", str(out_parquet)]) == 0  # fmt: skip
    with out_csv.open(newline="") as handle:
        expected = [row["prediction"] for row in csv.DictReader(handle)]
    table = parquet.read_table(out_parquet)
    assert table.column("prediction").to_pylist() == expected
    assert str(table.schema.field("probability_Adelie").type) == "double"
    rejects = parquet.read_table(tmp_path / "scored.rejects.parquet")
    assert rejects.num_rows == 0
    assert rejects.schema.names[:2] == ["row", "reason"]
