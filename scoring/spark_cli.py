"""`python -m scoring --engine spark`: read with Spark, score (scoring.spark), write with Spark.

`--data` and `--out` are whatever Spark reads and writes (local paths, `s3a://`, `hdfs://`),
Parquet for a `.parquet`/`.pq` name and CSV otherwise; the outputs are directories of part
files, committed by Spark only when the job succeeds. Exit codes and one-line errors are the
one-machine engine's.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from modelstore import LoadedModel
from modelstore.table import PARQUET_SUFFIXES, detect_separator
from scoring.batch import ScoringError
from scoring.cli import EXIT_BAD_INPUT, EXIT_WRITE
from scoring.spark import score_dataframe, session

# pyspark warns about the pandas version on import of its Arrow paths: not ours to act on.
warnings.filterwarnings("ignore", module="pyspark")


def run_on_spark(args: argparse.Namespace, loaded: LoadedModel, rejects: str) -> int:
    started = time.perf_counter()
    spark = session(args.master)
    spark.sparkContext.setLogLevel("ERROR")
    data, out = str(args.data), str(args.out)
    try:
        df = _read(spark, data, args.sep, args.encoding)
    except AnalysisException as exc:
        print(f"error: cannot read {data}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    markers = [m for m in args.missing_values.split(",") if m]
    try:
        scores = score_dataframe(
            df,
            args.models_dir,
            missing_values=markers,
            accept_unknown=args.unknown_categories == "accept",
            loaded=loaded,
        )
    except ScoringError as exc:
        print(f"error: {str(exc).replace('the DataFrame', data)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        _write(scores.predictions, out)
        _write(scores.rejects, rejects)
        scored, rejected = scores.predictions.count(), scores.rejects.count()
    except Exception as exc:  # Spark raises its own types, from the JVM; the job failed
        print(f"error: cannot write {out}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_WRITE
    finally:
        scores.unpersist()
    seconds = time.perf_counter() - started
    ref = loaded.ref
    master = spark.sparkContext.master
    print(
        f"scored {scored} of {scored + rejected} rows with {ref.name} version {ref.version} "
        f"(onnx, Spark {master}) in {seconds:.1f}s -> {out}"
    )
    if rejected:
        print(f"rejected {rejected} rows (row number and reason) -> {rejects}")
    return 0


def _read(spark: SparkSession, data: str, sep: str | None, encoding: str | None) -> DataFrame:
    """Parquet as typed columns; CSV as text cells (every column a string), as the one-machine
    reader sees them. The separator is detected on a local file when not given."""
    if Path(data).suffix.lower() in PARQUET_SUFFIXES:
        return spark.read.parquet(data)
    if sep is None:
        local = Path(data)
        sep = _detected(local, encoding) if local.is_file() else ","
    df = spark.read.csv(
        data,
        header=True,
        sep=sep.replace("\\t", "\t"),
        encoding=encoding or "UTF-8",
        inferSchema=False,
        quote='"',
        escape='"',
    )
    # A byte-order mark stays on the first header name in Spark's reader; the csv module drops it.
    first = df.columns[0] if df.columns else ""
    if first.startswith("\ufeff"):
        df = df.withColumnRenamed(first, first.lstrip("\ufeff"))
    return df


def _detected(path: Path, encoding: str | None) -> str:
    with path.open(encoding=encoding or "utf-8-sig", errors="replace") as handle:
        return detect_separator(handle.read(64 * 1024))


def _write(df: DataFrame, target: str) -> None:
    writer = df.write.mode("overwrite")
    if Path(target).suffix.lower() in PARQUET_SUFFIXES:
        writer.parquet(target)
    else:
        writer.csv(target, header=True, escape='"')


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
