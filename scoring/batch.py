"""Score a table in batches: the service's feature spec and runtime, rows out as they come in.

The table is read into Arrow batches of text by the reader training uses (modelstore.table):
each feature's column is checked and typed by the spec (scoring.columns), the rows that pass
are predicted in one call per batch by the predictor the service would run, and the input
cells plus the answers are written by Arrow. A row that fails goes to the rejects file with its
row number and reason. Memory stays flat however long the file: one batch at a time. A file
Arrow does not read as the csv module does (a row of another width, another encoding) is read
row by row instead, with the same checks. Both files are written under temporary names and
renamed when complete, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from modelstore import LoadedModel, class_key
from modelstore.table import MISSING_MARKERS, IrregularTableError, TableError, TableReader
from scoring.columns import ColumnReader, Reasons
from scoring.files import ScoringError, table_errors, written_on_success
from scoring.sinks import open_batch_sink, open_sink
from service.features import FeatureSpec
from service.runtimes import make_predictor
from service.runtimes.base import NON_FINITE_REASON, Predictor

CHUNK_ROWS = 20_000

__all__ = ["CHUNK_ROWS", "BatchScorer", "ScoringError", "Summary"]


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    rejected: int = 0


class BatchScorer:
    def __init__(
        self,
        loaded: LoadedModel,
        missing_values: list[str] | None = None,
        accept_unknown: bool = False,
    ) -> None:
        self.metadata = loaded.metadata
        self.predictor: Predictor = make_predictor(loaded)
        self.spec = FeatureSpec(self.metadata, accept_unknown)
        self.names = self.spec.names
        missing = MISSING_MARKERS | frozenset(missing_values or ())
        self.readers = [ColumnReader(rule, missing) for rule in self.spec.rules]
        classes = self.metadata.classes
        self.label_texts = None if classes is None else [_label(c) for c in classes]
        if self.metadata.task == "classification":
            self.prediction_columns = [
                "prediction",
                *(f"probability_{class_key(c)}" for c in classes or []),
            ]
        else:
            self.prediction_columns = ["prediction"]

    def score(
        self,
        source: Path,
        out: Path,
        rejects: Path,
        progress: Callable[[Summary], None] | None = None,
        encoding: str | None = None,
        sep: str | None = None,
    ) -> Summary:
        """Read through the reader training uses (the same encoding, separator and markers),
        so the training file itself scores with no rejects."""
        try:
            table = TableReader(source, encoding, sep, option="--encoding")
        except TableError as exc:
            raise ScoringError(str(exc)) from None
        with table, table_errors():
            positions = self.positions(table.header, str(source))
            with written_on_success(out, rejects) as (scored, refused):
                try:
                    return self._run(table, positions, out, rejects, scored, refused, progress)
                except IrregularTableError:
                    for handle in (scored, refused):  # start again, row by row
                        handle.seek(0)
                        handle.truncate()
                    return self._run(
                        table, positions, out, rejects, scored, refused, progress, by_row=True
                    )

    def _run(
        self,
        table: TableReader,
        positions: list[int],
        out: Path,
        rejects: Path,
        scored: IO[bytes],
        refused: IO[bytes],
        progress: Callable[[Summary], None] | None,
        by_row: bool = False,
    ) -> Summary:
        summary = Summary()
        header = table.header
        answers = dict.fromkeys(self.prediction_columns, "float64")
        if self.label_texts is not None:
            answers["prediction"] = "string"
        writer = open_batch_sink(scored, out.name, [*header, *self.prediction_columns], answers)
        reject_writer = open_sink(
            refused, rejects.name, ["row", "reason", *header], {"row": "int64"}
        )
        batches = _row_batches(table) if by_row else _arrow_batches(table)
        try:
            self._write(batches, header, positions, writer, reject_writer, summary, progress)
        finally:  # also before a row-by-row run, which truncates what was written
            writer.finish()
            reject_writer.finish()
        return summary

    def _write(
        self,
        batches: Batches,
        header: list[str],
        positions: list[int],
        writer: Any,
        reject_writer: Any,
        summary: Summary,
        progress: Callable[[Summary], None] | None,
    ) -> None:
        start = 1
        for batch, widths in batches:
            for offset in range(0, batch.num_rows, CHUNK_ROWS):
                chunk = batch.slice(offset, CHUNK_ROWS)
                reasons = {
                    row - offset: f"{cells} cells where the header has {len(header)}"
                    for row, cells in widths.items()
                    if offset <= row < offset + CHUNK_ROWS
                }
                self._score_chunk(start, chunk, positions, writer, reject_writer, summary, reasons)
                start += chunk.num_rows
            if progress is not None:
                progress(summary)

    def positions(self, header: list[str], source: str) -> list[int]:
        """Where each feature is in a table's header; a ScoringError for a missing feature or a
        column the answers would overwrite."""
        where = {name: i for i, name in enumerate(header)}
        missing = [n for n in self.names if n not in where]
        if missing:
            raise ScoringError(
                f"{source} lacks the model's columns {', '.join(missing)} "
                f"(it needs {', '.join(self.names)})"
            )
        clash = sorted(set(self.prediction_columns) & set(header))
        if clash:
            raise ScoringError(
                f"{source} already has columns named {', '.join(clash)}: rename them, "
                "the output adds its predictions under those names"
            )
        return [where[n] for n in self.names]

    def _score_chunk(
        self,
        start: int,
        chunk: pa.RecordBatch,
        positions: list[int],
        writer: Any,
        reject_writer: Any,
        summary: Summary,
        reasons: Reasons,
    ) -> None:
        """One chunk through the shared core, then its scored rows and rejects written;
        `reasons` may hold rows already refused (a row of another width)."""
        keep, output = self.predict_cells([chunk.column(p) for p in positions], reasons)
        if output.shape[0]:
            cells = chunk.filter(pa.array(keep)).columns
            arrays = [*cells, *self.answer_arrays(output)]
            names = [f"c{i}" for i in range(len(arrays))]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, names=names))
        bad = sorted(reasons)
        if bad:
            cells = chunk.take(pa.array(bad)).to_pylist()
            reject_writer.write(
                [[start + i, reasons[i], *row.values()] for i, row in zip(bad, cells, strict=True)]
            )
        summary.rows += chunk.num_rows
        summary.scored += int(keep.sum())
        summary.rejected += len(bad)

    def predict_cells(
        self, cells: list[pa.Array], reasons: Reasons
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """The core every engine shares (this one and Spark's): the feature columns of a batch
        as text cells, in feature order, checked and typed by the spec, then one model call for
        the rows that pass. Returns which rows were predicted and their answers, in order;
        every other row has its reason in `reasons`, where rows refused already may be."""
        columns = {
            reader.rule.name: reader.read(column, reasons)
            for reader, column in zip(self.readers, cells, strict=True)
        }
        rows = len(cells[0]) if cells else 0
        keep = np.ones(rows, dtype=bool)
        if reasons:
            keep[list(reasons)] = False
            columns = {name: values[keep] for name, values in columns.items()}
        kept = int(keep.sum())
        if not kept:
            classes = self.label_texts
            return keep, np.empty((0, len(classes)) if classes is not None else (0,))
        output = self.predictor.compute_columns(columns, kept)
        finite = np.isfinite(output) if output.ndim == 1 else np.isfinite(output).all(axis=1)
        if not finite.all():  # refused as /predict refuses them
            predicted = np.flatnonzero(keep)
            for row in predicted[~finite].tolist():
                reasons[row] = NON_FINITE_REASON
            keep[predicted[~finite]] = False
            output = output[finite]
        return keep, output

    def answer_arrays(self, output: np.ndarray[Any, Any]) -> list[pa.Array]:
        """The label and each class's probability (or the value), as `prediction_columns`
        names them: what `/predict` answers for the same rows."""
        if self.label_texts is None:
            return [pa.array(output, pa.float64())]
        labels = np.array(self.label_texts, dtype=object)[output.argmax(axis=1)]
        return [
            pa.array(labels, pa.string()),
            *(pa.array(output[:, k], pa.float64()) for k in range(output.shape[1])),
        ]


Batches = Iterator[tuple[pa.RecordBatch, dict[int, int]]]


def _arrow_batches(table: TableReader) -> Batches:
    for batch in table.text_batches():
        yield batch, {}


def _row_batches(table: TableReader) -> Batches:
    """The csv module's rows (padded when short) as batches of text, with the rows longer than
    the header (cut to it here, to be rejected) and their cell counts."""
    width = len(table.header)
    names = [f"f{i}" for i in range(width)]
    chunk: list[list[str]] = []
    wide: dict[int, int] = {}
    for cells in table.rows():
        if len(cells) > width:
            wide[len(chunk)] = len(cells)
            cells = cells[:width]
        chunk.append(cells)
        if len(chunk) == CHUNK_ROWS:
            yield _as_batch(chunk, names), wide
            chunk, wide = [], {}
    if chunk:
        yield _as_batch(chunk, names), wide


def _as_batch(rows: list[list[str]], names: list[str]) -> pa.RecordBatch:
    columns = [pa.array([cells[j] for cells in rows], pa.string()) for j in range(len(names))]
    return pa.RecordBatch.from_arrays(columns, names=names)


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
