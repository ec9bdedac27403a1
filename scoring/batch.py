"""Score a CSV file in chunks: the service's validation and runtime, rows out as they come in.

Memory stays flat however long the file: only one chunk of rows is held at a time. Each cell is
read from text as training read it (the same missing-value markers, the same words for
booleans), each column is checked by the field validators `/predict` uses, and the rows are
predicted by the predictor the service would run. A row that fails goes to the rejects file
with its row number and reason; the others are scored. Both files are written under temporary
names and renamed when complete, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import TypeAdapter, ValidationError

from modelstore import LoadedModel, class_key
from modelstore.spec import CellError
from modelstore.table import MISSING_MARKERS, TableError, TableReader
from scoring.sinks import open_sink
from service.features import FeatureRule, FeatureSpec
from service.runtimes import make_predictor
from service.runtimes.base import (
    NON_FINITE_REASON,
    NonFinitePredictionError,
    Predictor,
    Table,
    check_finite,
)

CHUNK_ROWS = 20_000


class ScoringError(Exception):
    """A fault in the input or the output that stops the whole run: `str()` is one line."""


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
        self.missing = MISSING_MARKERS | frozenset(missing_values or ())
        # The native instance's field types, each over a whole column: one call per feature
        # per chunk, and every error's `loc` is the row.
        self.checks = [TypeAdapter(_list_of(rule.value_type)) for rule in self.spec.rules]
        classes = self.metadata.classes
        self.label_texts = None if classes is None else [_label(c) for c in classes]
        classes = self.metadata.classes or []
        if self.metadata.task == "classification":
            self.prediction_columns = [
                "prediction",
                *(f"probability_{class_key(c)}" for c in classes),
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
        summary = Summary()
        try:
            table = TableReader(source, encoding, sep, option="--encoding")
        except TableError as exc:
            raise ScoringError(str(exc)) from None
        with table, _table_errors():
            header = table.header
            reader = table.rows()
            positions = self._positions(header, source)
            clash = sorted(set(self.prediction_columns) & set(header))
            if clash:
                raise ScoringError(
                    f"{source} already has columns named {', '.join(clash)}: rename them, "
                    "the output adds its predictions under those names"
                )
            with _written_on_success(out, rejects) as (scored, refused):
                answers = dict.fromkeys(self.prediction_columns, "float64")
                if self.label_texts is not None:
                    answers["prediction"] = "string"
                writer = open_sink(scored, out.name, [*header, *self.prediction_columns], answers)
                reject_writer = open_sink(
                    refused, rejects.name, ["row", "reason", *header], {"row": "int64"}
                )
                for start, chunk in _chunks(reader):
                    self._score_chunk(
                        start, chunk, positions, len(header), writer, reject_writer, summary
                    )
                    if progress is not None:
                        progress(summary)
                writer.finish()
                reject_writer.finish()
        return summary

    def _positions(self, header: list[str], source: Path) -> list[int]:
        where = {name: i for i, name in enumerate(header)}
        missing = [n for n in self.names if n not in where]
        if missing:
            raise ScoringError(
                f"{source} lacks the model's columns {', '.join(missing)} "
                f"(it needs {', '.join(self.names)})"
            )
        return [where[n] for n in self.names]

    def _score_chunk(
        self,
        start: int,
        chunk: list[list[str]],
        positions: list[int],
        width: int,
        writer: Any,
        reject_writer: Any,
        summary: Summary,
    ) -> None:
        """Column by column: text to values (C-speed `map` where every cell reads plainly), then
        the service's field validator over each whole column, then one predict call."""
        reasons: dict[int, str] = {}
        rows = chunk
        if any(len(cells) != width for cells in chunk):
            rows = []
            for index, cells in enumerate(chunk):
                if len(cells) != width:
                    reasons[index] = f"{len(cells)} cells where the header has {width}"
                    cells = [""] * width
                rows.append(cells)
        columns = []
        for rule, check, p in zip(self.spec.rules, self.checks, positions, strict=True):
            values = _read_column([cells[p] for cells in rows], rule, self.missing, reasons)
            try:
                check.validate_python(values)
            except ValidationError as exc:
                for error in exc.errors(include_url=False, include_context=False):
                    message = error["msg"]
                    if error["type"] == "literal_error":
                        message = rule.category_message()
                    if error["input"] is None:
                        message = rule.needs_value("missing")
                    reasons.setdefault(int(error["loc"][0]), f"{rule.name}: {message}")
            columns.append(values)
        good = [i for i in range(len(rows)) if i not in reasons] if reasons else None
        if good is None:
            kept, kept_rows = columns, chunk
        else:
            kept = [[column[i] for i in good] for column in columns]
            kept_rows = [chunk[i] for i in good]
        if kept_rows:
            table = Table(dict(zip(self.names, kept, strict=True)), len(kept_rows))
            output = self.predictor.compute(table)
            try:
                check_finite(output)
            except NonFinitePredictionError as exc:  # as /predict refuses them: rejected
                overflowed = set(exc.rows)
                positions = good if good is not None else list(range(len(chunk)))
                for row in exc.rows:
                    reasons[positions[row]] = NON_FINITE_REASON
                keep = [i for i in range(len(kept_rows)) if i not in overflowed]
                kept_rows, output = [kept_rows[i] for i in keep], output[keep]
            writer.write(_with_answers(kept_rows, output, self.label_texts))
        bad = sorted(reasons)
        reject_writer.write([[start + i, reasons[i], *chunk[i]] for i in bad])
        summary.rows += len(chunk)
        summary.scored += len(kept_rows)
        summary.rejected += len(bad)


def _read_column(
    cells: list[str], rule: FeatureRule, missing: frozenset[str], reasons: dict[int, str]
) -> list[Any]:
    """One feature's cells as values; a cell that cannot be read rejects its row."""
    if rule.type in ("number", "integer"):
        try:
            plain: list[Any] = list(map(int if rule.integer else float, cells))
        except ValueError:
            pass  # a gap, a marker or a fault somewhere: cell by cell below
        else:
            if rule.integer or not any(map(math.isnan, plain)):
                return plain
    values: list[Any] = []
    for index, text in enumerate(cells):
        try:
            values.append(rule.read_text(text, missing))
        except CellError as exc:
            reasons.setdefault(index, f"{rule.name}: {exc}")
            values.append(None)
    return values


def _with_answers(rows: list[list[str]], output: Any, labels: list[str] | None) -> list[list[Any]]:
    """Each row's cells, then its label and probabilities (or its value). csv writes a float as
    its shortest repr, which is what `/predict`'s JSON holds."""
    if labels is None:
        return [[*cells, value] for cells, value in zip(rows, output.tolist(), strict=True)]
    best = output.argmax(axis=1).tolist()
    return [
        [*cells, labels[b], *p] for cells, b, p in zip(rows, best, output.tolist(), strict=True)
    ]


def _chunks(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[list[str]]]]:
    """Rows in chunks, each with the 1-based data row number of its first row."""
    chunk: list[list[str]] = []
    start = 1
    for cells in reader:
        chunk.append(cells)
        if len(chunk) == CHUNK_ROWS:
            yield start, chunk
            start += len(chunk)
            chunk = []
    if chunk:
        yield start, chunk


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _list_of(item: Any) -> Any:
    return list[item]


@contextmanager
def _table_errors() -> Iterator[None]:
    """A fault found while reading (an undecodable byte deep in the file) is one line."""
    try:
        yield
    except TableError as exc:
        raise ScoringError(str(exc)) from None


@contextmanager
def _written_on_success(*paths: Path) -> Iterator[list[IO[bytes]]]:
    """Write into hidden files beside `paths`; rename them into place only once every one is
    whole (flushed to disk), so they appear together or not at all."""
    temporaries = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in paths]
    handles: list[IO[bytes]] = []
    renamed: list[Path] = []
    current = paths[0]
    try:
        for path, temporary in zip(paths, temporaries, strict=True):
            current = path
            handles.append(temporary.open("wb"))
        yield handles
        for path, handle in zip(paths, handles, strict=True):
            current = path
            handle.flush()
            os.fsync(handle.fileno())
        for path, temporary in zip(paths, temporaries, strict=True):
            current = path
            os.replace(temporary, path)
            renamed.append(path)
    except OSError as exc:
        for path in renamed:  # one landed and the next could not: take it back
            path.unlink(missing_ok=True)
        raise ScoringError(f"cannot write {current}: {exc.strerror}") from None
    finally:
        for handle in handles:
            with suppress(OSError):
                handle.close()
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
