"""The model layer: validated instances in, predictions out. No web framework here.

One seam with two implementations: `runtimes.onnx.OnnxPredictor` runs the version's compiled
graph in ONNX Runtime, `runtimes.sklearn.SklearnPredictor` runs the pickled pipeline. This base
owns what they share: the answer's shape, class keys, the finiteness check and the timing the
dispatcher plans with.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from modelstore import Metadata, class_key
from service.features import FEW_VALUES


class Kinds(list[tuple[str, bool]]):
    """(name, is_text) of each feature, in feature order (see `kinds_of`), with the lists a
    table is built from worked out once: per request they cost a one-row table ~2 of its ~5 us."""

    def __init__(self, pairs: list[tuple[str, bool]]) -> None:
        super().__init__(pairs)
        self.names = [name for name, _ in pairs]
        self.numeric = [name for name, is_text in pairs if not is_text]
        self.text = [name for name, is_text in pairs if is_text]
        self.numeric_values = row_values(self.numeric) if self.numeric else None


class Table:
    """Rows as one column per feature: what every protocol decodes into and every runtime reads.

    A protocol hands over lists of plain values (None for a gap) or, where it has them, typed
    arrays; `typed` turns every column into the arrays both runtimes compute on. A typed table
    also holds its non-text columns as one float64 block, a feature per row (`numbers`; each of
    those columns is a row of it), so requests that share a call join in one concatenation, the
    graph is fed without a call per feature and drift bins the block as it is.
    """

    __slots__ = ("_columns", "_names", "_text", "numbers", "rows")

    def __init__(
        self, columns: dict[str, Any] | None, rows: int, numbers: np.ndarray[Any, Any] | None = None
    ) -> None:
        self._columns = columns
        self.rows = rows
        self.numbers = numbers
        self._names: list[str] = []
        self._text: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.rows

    @property
    def columns(self) -> dict[str, Any]:
        """Every feature's column, in feature order; a typed table's are made when first asked
        for (the model and drift read its block and text columns without them)."""
        if self._columns is None:
            rows, text = iter(self.numbers), self._text  # type: ignore[arg-type]
            self._columns = {
                name: text[name] if name in text else next(rows) for name in self._names
            }
        return self._columns

    def column(self, name: str) -> Any:
        """One feature's column (a text one without making the others)."""
        found = self._text.get(name)
        return found if found is not None else self.columns[name]

    @classmethod
    def from_instances(cls, instances: list[dict[str, Any]], kinds: Kinds) -> Table:
        """Validated instances (objects keyed by feature) as a typed table: every non-text
        value goes into the block in one numpy call, from each instance's values in feature
        order (C loops); a small request's cost is mostly numpy's per call."""
        if kinds.numeric_values is not None and instances:
            values = list(map(kinds.numeric_values, instances))
            block = np.array(values, dtype=np.float64).T
        else:
            block = np.empty((len(kinds.numeric), len(instances)))
        text = {name: typed_column([item[name] for item in instances], True) for name in kinds.text}
        return cls.of_numbers(block, kinds.names, text)

    @classmethod
    def of_numbers(
        cls, block: np.ndarray[Any, Any], names: list[str], text: dict[str, Any] | None = None
    ) -> Table:
        """A typed table from the non-text features' block (a feature per row, in feature order,
        float64) and, when the model has any, its typed text columns. `names` lists every
        feature in order."""
        block = np.ascontiguousarray(block, dtype=np.float64)
        table = cls(None, block.shape[1], block)
        table._names, table._text = names, text or {}
        return table

    def typed(self, kinds: Kinds) -> Table:
        """The table as both runtimes compute on it: float64 with NaN for a gap (numbers,
        integers and booleans as 1.0 / 0.0, in the numbers block), objects with None for a gap
        (text). `kinds` is (name, is_text) per feature, in feature order."""
        if self.numbers is not None:
            return self
        columns = self.columns
        numeric = [columns[name] for name in kinds.numeric]
        # One numpy call for every non-text column, lists and arrays alike: for a small request,
        # numpy's cost per call is most of the conversion.
        block = np.array(numeric, dtype=np.float64) if numeric else np.empty((0, self.rows))
        text = {name: typed_column(columns[name], True) for name in kinds.text}
        return Table.of_numbers(block, kinds.names, text)

    @classmethod
    def concat(cls, tables: list[Table], kinds: Kinds) -> Table:
        """One typed table of several requests' rows."""
        if len(tables) == 1:
            return tables[0].typed(kinds)
        typed = [table.typed(kinds) for table in tables]
        block = np.concatenate([t.numbers for t in typed], axis=1)
        text = {name: np.concatenate([t.column(name) for t in typed]) for name in kinds.text}
        return cls.of_numbers(block, kinds.names, text)


Columns = dict[str, np.ndarray[Any, Any]]


def kinds_of(metadata: Metadata) -> Kinds:
    """(name, is_text) of each feature, in feature order: how a typed table holds it."""
    return Kinds([(f.name, f.type == "string") for f in metadata.features])


def row_values(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """An instance's values for `names` (at least one) as a tuple: in C for two or more;
    itemgetter gives a single name's value itself, and a list value would pass for a row."""
    if len(names) == 1:
        (name,) = names
        return lambda item: (item[name],)
    return itemgetter(*names)


def typed_column(values: Any, is_text: bool) -> np.ndarray[Any, Any]:
    """One column (a list, or an array already) as its typed array; numpy reads None as NaN
    for float64 and True / False as 1.0 / 0.0."""
    kind = object if is_text else np.float64
    if isinstance(values, np.ndarray) and values.dtype == kind:
        return values
    return np.asarray(values, dtype=kind)


def text_with_gaps_as(column: np.ndarray[Any, Any], fill: Any) -> np.ndarray[Any, Any]:
    """A text column with each gap (None) replaced by what a runtime's model reads as missing."""
    gaps: np.ndarray[Any, Any] = column == None  # noqa: E711 (numpy compares each element)
    if not gaps.any():
        return column
    filled = column.copy()
    filled[gaps] = fill
    return filled


# Why a row whose prediction overflowed is refused: the same words on every route and in scoring.
NON_FINITE_REASON = (
    "the model's prediction for this instance is not a finite number: its values are beyond "
    "what the model can handle"
)


class NonFinitePredictionError(Exception):
    """The model produced NaN or infinity for these rows (inputs beyond what it can handle)."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"non-finite prediction for rows {rows}")
        self.rows = rows


class Predictor(ABC):
    """Everything reusable is computed once, at start-up; subclasses set up, then call this."""

    runtime: str

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata
        self.feature_names = [f.name for f in metadata.features]
        self.kinds = kinds_of(metadata)
        self.is_classifier = metadata.task == "classification"
        self.classes: list[Any] = list(metadata.classes or [])
        self.class_keys = [class_key(c) for c in self.classes]
        self.fixed_cost, self.row_cost = self._measure()

    def compute(self, table: Table) -> np.ndarray[Any, Any]:
        """Class probabilities (n x classes, metadata order) or values (n), as float64."""
        return self.compute_typed(table.typed(self.kinds))

    def compute_typed(self, table: Table) -> np.ndarray[Any, Any]:
        """The same from a typed table; a runtime that can use its numbers block does."""
        return self.compute_columns(table.columns, table.rows)

    @abstractmethod
    def compute_columns(self, columns: Columns, rows: int) -> np.ndarray[Any, Any]:
        """The same from typed columns (see `Table.typed`): what batch scoring builds
        straight from Arrow."""

    def predict(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Offline use and start-up timing: validated instances in, native answers out."""
        output = self.compute(Table.from_instances(instances, self.kinds))
        check_finite(output)
        return self.shape(output)

    def shape(self, output: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
        """The native API's answer for each row of a `compute` result."""
        if not self.is_classifier:
            return [{"value": v} for v in output.tolist()]
        # Labels and probability objects made by C loops (map), the answers' own dicts by one
        # comprehension: 100 rows of 2 classes, 59 -> 43 us.
        shares_of = output.tolist()
        labels = map(self.classes.__getitem__, first_largest(output, shares_of))
        probabilities = map(dict, map(zip, repeat(self.class_keys), shares_of))
        return [
            {"label": label, "probabilities": shares}
            for label, shares in zip(labels, probabilities, strict=True)
        ]

    def estimated_seconds(self, rows: int) -> float:
        return self.fixed_cost + self.row_cost * rows

    def _measure(self) -> tuple[float, float]:
        """Warm the model up and time it: a fixed cost per call plus a cost per row. The
        fastest of each five calls: a busy machine only ever adds time, and the dispatcher
        decides by these figures where a call runs (on the loop or on the model thread), so a
        median let start-up's neighbours decide it (the forest at 100 rows: 465-511 us against
        a 500 us budget, and 14% of its throughput between the two places)."""
        example = [dict(self.metadata.example)]

        def timed(batch: list[dict[str, Any]]) -> float:
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                self.predict(batch)
                samples.append(time.perf_counter() - started)
            return min(samples)

        one = timed(example)
        many = timed(example * 64)
        return one, max(0.0, (many - one) / 63)


def first_largest(output: np.ndarray[Any, Any], rows: list[list[float]] | None = None) -> list[int]:
    """Each row's index of its largest share, the first of equal ones (argmax's rule): a few
    rows (`rows`, when the caller has them as lists already) in Python, where numpy's call costs
    them more in a request."""
    if output.size <= FEW_VALUES:
        return [row.index(max(row)) for row in (output.tolist() if rows is None else rows)]
    found: list[int] = output.argmax(axis=1).tolist()
    return found


def check_finite(values: np.ndarray[Any, Any]) -> None:
    """JSON has no infinity: huge but finite inputs can overflow a linear model.

    A few values are judged as Python floats (numpy's two calls cost ~1.4 us, the map ~0.3;
    in a request ~10 us against ~2). Many are judged by numpy (their sum would be one call,
    but the `errstate` an overflowing sum needs costs more than the call it saves)."""
    if values.size <= FEW_VALUES and all(map(math.isfinite, values.ravel().tolist())):
        return
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite if finite.ndim == 1 else ~finite.all(axis=1)
        raise NonFinitePredictionError(np.flatnonzero(bad).tolist())
