"""Batch scoring on Apache Spark: the same checks, reject reasons and answers as
`python -m scoring`, over a DataFrame of any size.

The driver loads the version through the store (its files checked against their sha256, the
ONNX graph required: executors never unpickle anything) and broadcasts the verified bytes. Each
Python worker builds one `BatchScorer` from them, kept for the worker's life, and runs every
Arrow batch Spark hands it through the core the one-machine engine uses
(`BatchScorer.predict_cells`): each column turned into the text a CSV holds for it
(`modelstore.table.text_column`), checked and typed by the feature spec, one model call for
the rows that pass. Rows are numbered as `python -m scoring` numbers them (the data rows in
file order, from 1, blank rows left out) from a count of each partition's rows, or carry an id
column of the caller's.

    from scoring.spark import score_dataframe
    scores = score_dataframe(df, "models", "penguins:1")
    scores.predictions.write.parquet("s3a://bucket/scored")
    scores.rejects.write.csv("s3a://bucket/rejects", header=True)
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 (pyspark's own convention)
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from modelstore import LoadedModel, Metadata, ModelRef
from modelstore.table import text_column
from scoring.batch import BatchScorer, ScoringError
from service.loading import load_model
from service.settings import Settings

ROW, REASON = "row", "reason"
_ID = "__scoring_id"
# monotonically_increasing_id(): the partition's index above bit 33, the row's within it below.
_PARTITION_SHIFT = 33
_WITHIN = (1 << _PARTITION_SHIFT) - 1


@dataclass(frozen=True)
class Shipped:
    """What executors receive: the verified bytes and the options of the run."""

    metadata_json: str
    graph: bytes
    missing_values: tuple[str, ...]
    accept_unknown: bool


@dataclass
class SparkScores:
    """The scored rows (the columns kept, then the answers) and the rejects (row, reason, the
    input's cells as text). Both read one scored DataFrame, persisted so that writing both
    scores once; `unpersist()` frees it."""

    predictions: DataFrame
    rejects: DataFrame
    scored: DataFrame

    def unpersist(self) -> None:
        self.scored.unpersist()


def load_verified(models_dir: str | Path, model: str | None) -> LoadedModel:
    """The version `model` (NAME[:VERSION], or the store's only model) with its graph,
    verified; the store's own errors (ModelStoreError, RuntimeUnavailableError) otherwise."""
    name, _, version = (model or "").partition(":")
    settings = Settings(
        model_dir=Path(models_dir),
        model_name=name or None,
        model_version=version or "latest",
        runtime="onnx",
    )
    return load_model(settings)


def score_dataframe(
    df: DataFrame,
    models_dir: str | Path,
    model: str | None = None,
    keep: list[str] | None = None,
    row_id: str | None = None,
    missing_values: list[str] | None = None,
    accept_unknown: bool = False,
    loaded: LoadedModel | None = None,
) -> SparkScores:
    """Score `df` with a version of the store at `models_dir` (a path the driver reads).

    `keep`: the input columns the predictions carry (default: all). `row_id`: a column whose
    value names a rejected row (default: its position, numbered as `python -m scoring` numbers
    a file's rows; for a DataFrame that is not read straight from files, cache it first so its
    partitions are the same twice). Raises ScoringError for a missing column or a clash, and
    the store's errors for a bad reference or a file that fails its check, before any scoring.
    """
    if loaded is None:
        loaded = load_verified(models_dir, model)
        if loaded.hold is not None:  # executors get the verified bytes, never the store's files
            loaded.hold.close()
    if loaded.graph is None:  # load_verified asks for the graph; a caller's may lack it
        raise ScoringError("Spark scoring runs the version's ONNX graph, and it has none")
    scorer = BatchScorer(loaded, missing_values, accept_unknown)
    columns = df.columns
    scorer.positions(columns, "the DataFrame")
    wanted = columns if keep is None else keep
    unknown = [c for c in [*wanted, *([row_id] if row_id else [])] if c not in columns]
    if unknown:
        raise ScoringError(f"the DataFrame has no columns named {', '.join(unknown)}")
    taken = [ROW, REASON, _ID]
    if any(c in columns for c in taken):
        raise ScoringError(f"the DataFrame already has a column named one of {', '.join(taken)}")

    spark = df.sparkSession
    ship_code(spark)
    shipped = spark.sparkContext.broadcast(
        Shipped(
            loaded.metadata.model_dump_json(),
            loaded.graph,
            tuple(missing_values or ()),
            accept_unknown,
        )
    )
    # A row whose every cell is empty is a blank line to the one-machine reader: left out.
    rows = df.na.drop(how="all").withColumn(_ID, F.monotonically_increasing_id())
    offsets = None if row_id else spark.sparkContext.broadcast(_partition_offsets(rows))
    answers = [
        StructField(name, StringType() if kind == "string" else DoubleType())
        for name, kind in _answer_kinds(scorer)
    ]
    row_type = df.schema[row_id].dataType if row_id else LongType()
    row_fields = [StructField(ROW, row_type), StructField(REASON, StringType())]
    schema = StructType([*rows.schema.fields, *row_fields, *answers])
    score = _scorer_of_batches(shipped, offsets, scorer.names, row_id)
    scored = rows.mapInArrow(score, schema).persist(StorageLevel.MEMORY_AND_DISK)
    answer_names = [field.name for field in answers]
    predictions = scored.filter(F.col(REASON).isNull()).select(*wanted, *answer_names)
    rejects = scored.filter(F.col(REASON).isNotNull()).select(
        F.col(ROW),
        F.col(REASON),
        *(F.coalesce(F.col(c).cast("string"), F.lit("")).alias(c) for c in columns),
    )
    return SparkScores(predictions, rejects, scored)


def _answer_kinds(scorer: BatchScorer) -> list[tuple[str, str]]:
    label = "string" if scorer.label_texts is not None else "double"
    first, *probabilities = scorer.prediction_columns
    return [(first, label), *((name, "double") for name in probabilities)]


def _partition_offsets(rows: DataFrame) -> dict[int, int]:
    """The number of rows before each partition: one pass that reads only row boundaries."""
    counts = (
        rows.select(F.shiftright(F.col(_ID), _PARTITION_SHIFT).alias("p"))
        .groupBy("p")
        .count()
        .collect()
    )
    offsets, total = {}, 0
    for record in sorted(counts, key=lambda r: r["p"]):
        offsets[int(record["p"])] = total
        total += int(record["count"])
    return offsets


# One scorer per Python worker process and version: its ONNX Runtime session is built once.
_SCORERS: dict[str, BatchScorer] = {}


def _worker_scorer(shipped: Shipped) -> BatchScorer:
    metadata = Metadata.model_validate_json(shipped.metadata_json)
    key = f"{metadata.name}:{metadata.version}:{shipped.missing_values}:{shipped.accept_unknown}"
    scorer = _SCORERS.get(key)
    if scorer is None:
        ref = ModelRef(name=metadata.name, version=metadata.version, path=Path("."))
        loaded = LoadedModel(ref=ref, metadata=metadata, graph=shipped.graph)
        scorer = BatchScorer(loaded, list(shipped.missing_values), shipped.accept_unknown)
        _SCORERS[key] = scorer
    return scorer


def _scorer_of_batches(
    shipped: Any, offsets: Any, names: list[str], row_id: str | None
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function each executor runs over its partition's Arrow batches."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _worker_scorer(shipped.value)
        starts = None if offsets is None else offsets.value
        for batch in batches:
            if batch.num_rows:
                yield _scored_batch(scorer, batch, names, starts, row_id)

    return score


def _scored_batch(
    scorer: BatchScorer,
    batch: pa.RecordBatch,
    names: list[str],
    starts: dict[int, int] | None,
    row_id: str | None,
) -> pa.RecordBatch:
    reasons: dict[int, str] = {}
    cells = [text_column(batch.column(name)) for name in names]
    keep, output = scorer.predict_cells(cells, reasons)
    count = batch.num_rows
    if starts is None:
        assert row_id is not None
        row = batch.column(row_id)
    else:
        ids = batch.column(_ID).to_numpy()
        base = np.array([starts[p] for p in (ids >> _PARTITION_SHIFT).tolist()], dtype=np.int64)
        row = pa.array(base + (ids & _WITHIN) + 1, pa.int64())
    reason = pa.array([reasons.get(i) for i in range(count)], pa.string())
    answers = []
    for array in scorer.answer_arrays(output):
        full = pa.nulls(count, array.type) if not keep.any() else _scatter(array, keep)
        answers.append(full)
    return pa.RecordBatch.from_arrays(
        [*batch.columns, row, reason, *answers],
        names=[*batch.schema.names, ROW, REASON, *scorer.prediction_columns],
    )


def _scatter(values: pa.Array, keep: np.ndarray[Any, Any]) -> pa.Array:
    """The answers of the kept rows at their places, null at the rejected ones."""
    where = np.cumsum(keep) - 1
    where[~keep] = 0
    taken = values.take(pa.array(where))
    return pc.if_else(pa.array(keep), taken, pa.nulls(len(keep), values.type))


# The packages executors import to score, and the applications they were shipped to.
_PACKAGES = ("modelstore", "scoring", "service")
_SHIPPED_TO: set[str] = set()


def ship_code(spark: SparkSession) -> None:
    """Send this project's packages to the executors (once per application), as `--py-files`
    would: a cluster's Python then needs only the dependencies (requirements/spark.txt)."""
    context = spark.sparkContext
    app = context.applicationId
    if app in _SHIPPED_TO:
        return
    root = Path(__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix="sklearn-serve-code-"))
    archive = folder / "sklearn_serve_code.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for package in _PACKAGES:
            for source in sorted((root / package).rglob("*.py")):
                bundle.write(source, source.relative_to(root).as_posix())
    context.addPyFile(str(archive))
    _SHIPPED_TO.add(app)


def session(master: str | None, name: str = "sklearn-serve scoring") -> SparkSession:
    """A session for the command line: the master given (or spark-submit's), Python workers
    on this interpreter unless PYSPARK_PYTHON says otherwise."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(name).config("spark.ui.showConsoleProgress", "false")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()
