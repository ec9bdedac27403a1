"""Reading a CSV and inferring the feature schema that the service will enforce.

Every cell is read as text first and typed here, not by pandas, so that the rules are ours and
can be overridden per column: codes with leading zeros (`01234`) stay strings, `[data]
missing_values` adds markers such as `?`, `[data.types]` forces a column's type, and columns
that cannot help a model (constant, dates, near-unique text, numbers spoiled by a marker) are
left out with a note rather than turned into a huge or useless list of categories.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelstore import Feature, sha256_file
from modelstore.spec import BOOLEAN_WORDS, INTEGER_TEXT, read_cell
from modelstore.table import MISSING_MARKERS, TableError, TableReader
from training.errors import TrainingError

# A numeric target with at most this many distinct integer values is taken as class labels.
MAX_CLASSES_FOR_NUMERIC_TARGET = 20
MIN_ROWS = 10
# A text column with more distinct values than this, and than half its rows, is not categorical.
MAX_CATEGORIES = 50
# Share of a column's values that must look like numbers (or dates) for it to be taken as such.
MOSTLY = 0.9
# How many odd values in an otherwise numeric column still read as a missing-value marker.
MAX_MARKERS = 5

_LEADING_ZERO = re.compile(r"[+-]?0[0-9]")
_DATE = re.compile(
    r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9:.+-Z]*)?"
    r"|[0-9]{1,2}[/.][0-9]{1,2}[/.][0-9]{2,4}( [0-9:]+)?"
)
_INT64 = (-(2**63), 2**63 - 1)


@dataclass
class Dataset:
    features: list[Feature]
    X: np.ndarray[Any, np.dtype[np.object_]]
    y: np.ndarray[Any, Any]
    task: str
    rows: int
    sha256: str
    example: dict[str, Any]
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_csv(
    path: Path,
    missing_values: list[str] | None = None,
    encoding: str | None = None,
    sep: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Every cell as text (or missing), through the reader scoring uses too; and notes on what
    was decided for the user (a separator other than a comma, a row-number column left out)."""
    notes: list[str] = []
    try:
        with TableReader(
            path, encoding, sep, "[data] encoding (or --encoding)", "data file"
        ) as table:
            header, rows = table.header, list(table.rows())
            if table.sep != ",":
                notes.append(f"read as {table.separator_name}-separated")
            if table.row_number_column:
                notes.append("left out the unnamed first column: row numbers, not data")
                header, rows = header[1:], [cells[1:] for cells in rows]
    except TableError as exc:
        raise TrainingError(str(exc)) from None
    if not rows:
        raise TrainingError(f"data file {path} has a header but no rows")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise TrainingError(f"data file {path} names column {name!r} twice")
        seen.add(name)
    if any(len(cells) > len(header) for cells in rows):
        row = next(i for i, cells in enumerate(rows, 1) if len(cells) > len(header))
        raise TrainingError(
            f"data file {path} row {row} has more cells than the header's {len(header)} "
            f"(is {table.separator_name} the separator? set [data] sep or --sep)"
        )
    markers = MISSING_MARKERS | frozenset(missing_values or ())
    frame = pd.DataFrame(
        [[None if cell in markers else cell for cell in cells] for cells in rows],
        columns=header,
        dtype=object,
    )
    return frame, notes


def load_dataset(
    path: Path,
    target: str,
    task: str,
    drop: list[str],
    missing_values: list[str] | None = None,
    types: Mapping[str, str] | None = None,
    encoding: str | None = None,
    sep: str | None = None,
) -> Dataset:
    frame, notes = read_csv(path, missing_values, encoding, sep)
    types = dict(types or {})
    if target not in frame.columns:
        known = ", ".join(map(str, frame.columns))
        raise TrainingError(f"target column {target!r} not in {path.name} (columns: {known})")
    for what, named in (("drop", drop), ("set the type of", list(types))):
        unknown = [c for c in named if c not in frame.columns]
        if unknown:
            raise TrainingError(f"cannot {what} unknown column(s) {', '.join(unknown)}")
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise TrainingError(f"target column {target!r} has no values")
    if len(labelled) < len(frame):
        notes.append(f"dropped {len(frame) - len(labelled)} rows without a {target!r} value")
    if len(labelled) < MIN_ROWS:
        raise TrainingError(f"only {len(labelled)} labelled rows; at least {MIN_ROWS} are needed")
    y_series = typed_column(
        target, labelled[target], types.get(target) or infer_type(frame[target])
    )
    if y_series.nunique() < 2:
        raise TrainingError(
            f"target column {target!r} has a single value ({y_series.iloc[0]!r}): nothing to learn"
        )
    task = task if task != "auto" else infer_task(y_series)
    y = target_values(y_series, task, target)

    features: list[Feature] = []
    columns: dict[str, pd.Series] = {}
    ignored = [c for c in drop if c != target]
    for name in labelled.columns:
        if name == target or name in drop:
            continue
        # Typed on the whole file, as a pandas user sees it: a column with gaps is a number.
        kind = types.get(name) or infer_type(frame[name])
        # A gap anywhere in the file, an unlabelled row's included, makes the feature nullable:
        # scoring that same file then rejects nothing.
        gaps = bool(frame[name].isna().any())
        feature, column, note = infer_feature(name, labelled[name], kind, name in types, gaps)
        if note:
            notes.append(note)
        if feature is None:
            ignored.append(name)
        else:
            features.append(feature)
            columns[name] = column
    if not features:
        raise TrainingError(f"no usable feature columns besides {target!r}")
    X = feature_matrix(columns, features)
    return Dataset(
        features=features,
        X=X,
        y=y,
        task=task,
        rows=len(labelled),
        sha256=sha256_file(path),
        example=typical_row(columns, features),
        ignored=ignored,
        notes=notes,
    )


def infer_type(raw: pd.Series) -> str:
    """The narrowest type every present value fits: boolean, integer, number, else string."""
    present = raw.dropna().astype(str)
    if present.empty:
        return "string"
    if present.str.lower().isin(list(BOOLEAN_WORDS)).all():
        return "boolean"
    if present.str.fullmatch(INTEGER_TEXT).all():
        if present.str.match(_LEADING_ZERO).any():
            return "string"  # codes such as zip codes: 01234 is not the number 1234
        values = present.map(int)
        in_range = bool(values.between(*_INT64).all())
        # An integer column with gaps stays a number, as pandas (and so most clients) sends it.
        return "integer" if in_range and len(present) == len(raw) else "number"
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all() and np.isfinite(numbers.to_numpy(dtype=float)).all():
        return "number"
    return "string"


def typed_column(name: str, raw: pd.Series, kind: str) -> pd.Series:
    """Text cells as typed Python values (missing as None); a declared type must fit every cell."""

    def convert(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        read = read_cell(str(value), kind)  # as scoring reads it (modelstore.spec)
        if isinstance(read, float) and (not math.isfinite(read) or kind == "integer"):
            raise ValueError(value)
        return read

    values = []
    for row, value in enumerate(raw.tolist()):
        try:
            values.append(convert(value))
        except (KeyError, ValueError, OverflowError):
            raise TrainingError(
                f"column {name!r} is read as {kind} but row {row + 1} holds {str(value)[:40]!r}: "
                "fix the value, list it in [data] missing_values, or set [data.types]"
            ) from None
    dtypes: dict[str, Any] = {
        "number": "float64",
        "integer": "Int64",
        "boolean": "boolean",
        "string": object,
    }
    typed: pd.Series = pd.Series(values, index=raw.index, dtype=dtypes[kind], name=name)
    return typed


def infer_task(y: pd.Series) -> str:
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.to_numpy(dtype=float)
    integral = bool(np.all(np.mod(values, 1) == 0))
    few = y.nunique() <= MAX_CLASSES_FOR_NUMERIC_TARGET
    return "classification" if integral and few else "regression"


def target_values(y: pd.Series, task: str, name: str) -> np.ndarray[Any, Any]:
    if task == "regression":
        if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
            raise TrainingError(f"target column {name!r} is not numeric, so it cannot be regressed")
        return y.to_numpy(dtype=float)
    if pd.api.types.is_bool_dtype(y):
        return y.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(y):
        return y.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(y):
        values = y.to_numpy(dtype=float)
        return values.astype(np.int64) if np.all(np.mod(values, 1) == 0) else values
    return y.astype(str).to_numpy(dtype=object)


def infer_feature(
    name: str, raw: pd.Series, kind: str, declared: bool = False, gaps_in_file: bool = False
) -> tuple[Feature | None, pd.Series, str | None]:
    """The feature for one column, or None with the reason it is left out."""
    present = raw.dropna().astype(str)
    if present.empty:
        return None, raw, f"ignored column {name!r}: it has no values"
    column = typed_column(name, raw, kind)
    nullable = len(present) < len(raw) or gaps_in_file
    distinct = column.nunique()
    if distinct == 1 and not declared:
        return None, column, f"ignored column {name!r}: its only value is {present.iloc[0]!r}"
    if kind == "integer" and not declared:
        reason = _integer_identifier(name, column)
        if reason:
            return None, column, reason
    if kind != "string":
        return Feature(name=name, type=kind, nullable=nullable), column, None
    if not declared:
        reason = _not_categorical(name, present, len(raw))
        if reason:
            return None, column, reason
    categories = sorted(present.unique().tolist())
    return Feature(name=name, type="string", nullable=nullable, categories=categories), column, None


def _integer_identifier(name: str, column: pd.Series) -> str | None:
    """An integer column that numbers the rows: a different value on every row, increasing down
    the file (a counter, or an id assigned in order). A model that learns from it learns the
    file's order: on a table sorted by the target it looks perfect and predicts nothing."""
    values = column.tolist()
    if any(v is None or v is pd.NA for v in values) or len(values) < MIN_ROWS:
        return None
    increasing = all(a < b for a, b in pairwise(values))
    counter = increasing and values[-1] - values[0] == len(values) - 1
    if not (counter or (increasing and len(values) >= 20)):
        return None
    what = "a row counter" if counter else "a different, increasing value on every row"
    return (
        f"ignored column {name!r}: {what}, like an identifier; "
        f'set [data.types] {name} = "integer" to keep it'
    )


def _not_categorical(name: str, present: pd.Series, rows: int) -> str | None:
    keep = f'set [data.types] {name} = "string" to keep it as categories'
    numbers = pd.to_numeric(present, errors="coerce")
    odd = present[numbers.isna()]
    if len(odd) and numbers.notna().mean() >= MOSTLY and odd.nunique() <= MAX_MARKERS:
        shown = ", ".join(repr(v) for v in sorted(odd.unique())[:MAX_MARKERS])
        return (
            f"ignored column {name!r}: numbers except for {shown} in {len(odd)} rows; "
            f"list those in [data] missing_values to use it as a number, or {keep}"
        )
    if present.str.fullmatch(_DATE).mean() >= MOSTLY:
        return f"ignored column {name!r}: it holds dates; derive features from them, or {keep}"
    distinct = present.nunique()
    if distinct == rows and rows >= 20:
        return f"ignored column {name!r}: every value is different, like an identifier"
    if distinct > MAX_CATEGORIES and distinct > rows / 2:
        return (
            f"ignored column {name!r}: {distinct} distinct values in {rows} rows are too many "
            f"to learn from as categories; {keep}"
        )
    return None


def feature_matrix(
    columns: Mapping[str, pd.Series], features: list[Feature]
) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Rows as plain Python values in feature order, missing as NaN: exactly what serving sends."""
    first = next(iter(columns.values()))
    matrix = np.empty((len(first), len(features)), dtype=object)
    for index, feature in enumerate(features):
        column = columns[feature.name]
        if feature.type == "number":
            values: list[Any] = [float(v) for v in column.to_numpy(dtype=float, na_value=math.nan)]
        else:
            values = [_plain(v, feature.type) for v in column.tolist()]
        matrix[:, index] = values
    return matrix


def _plain(value: Any, kind: str) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if kind == "boolean":
        return bool(value)
    if kind == "integer":
        return int(value)
    return str(value)


def typical_row(columns: Mapping[str, pd.Series], features: list[Feature]) -> dict[str, Any]:
    """An example instance for the API docs made of medians and most frequent values.

    Never a real row: the docs are public even when predictions need a key, and training data
    may be private.
    """
    example: dict[str, Any] = {}
    for feature in features:
        present = columns[feature.name].dropna()
        if feature.type == "number":
            example[feature.name] = float(np.round(present.astype(float).median(), 6))
        elif feature.type == "integer":
            example[feature.name] = int(np.round(present.astype(float).median()))
        else:
            counts = present.value_counts()
            top = counts[counts == counts.max()].index
            value = sorted(top.tolist(), key=str)[0]
            example[feature.name] = bool(value) if feature.type == "boolean" else str(value)
    return example
