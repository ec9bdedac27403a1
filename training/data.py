"""Reading a CSV and inferring the feature schema that the service will enforce."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelstore import Feature, sha256_file
from training.errors import TrainingError

# A numeric target with at most this many distinct integer values is taken as class labels.
MAX_CLASSES_FOR_NUMERIC_TARGET = 20
MIN_ROWS = 10


@dataclass
class Dataset:
    features: list[Feature]
    X: np.ndarray[Any, np.dtype[np.object_]]
    y: np.ndarray[Any, Any]
    task: str
    rows: int
    sha256: str
    example: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TrainingError(f"data file {path} not found")
    if not path.is_file():
        raise TrainingError(f"data path {path} is not a file")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise TrainingError(f"data file {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"data file {path} is not a readable CSV: {reason}") from None
    except OSError as exc:
        raise TrainingError(f"cannot read data file {path}: {exc.strerror}") from None
    if frame.empty:
        raise TrainingError(f"data file {path} has a header but no rows")
    return frame


def load_dataset(path: Path, target: str, task: str, drop: list[str]) -> Dataset:
    frame = read_csv(path)
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise TrainingError(f"target column {target!r} not in {path.name} (columns: {columns})")
    unknown = [c for c in drop if c not in frame.columns]
    if unknown:
        raise TrainingError(f"cannot drop unknown column(s) {', '.join(unknown)}")
    notes: list[str] = []
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise TrainingError(f"target column {target!r} has no values")
    if len(labelled) < len(frame):
        notes.append(f"dropped {len(frame) - len(labelled)} rows without a {target!r} value")
    if len(labelled) < MIN_ROWS:
        raise TrainingError(f"only {len(labelled)} labelled rows; at least {MIN_ROWS} are needed")
    y_series = labelled[target]
    if y_series.nunique() < 2:
        raise TrainingError(
            f"target column {target!r} has a single value ({y_series.iloc[0]!r}): nothing to learn"
        )
    task = task if task != "auto" else infer_task(y_series)
    y = target_values(y_series, task, target)

    features: list[Feature] = []
    for column in labelled.columns:
        if column == target or column in drop:
            continue
        feature, note = infer_feature(str(column), labelled[column])
        if note:
            notes.append(note)
        if feature is not None:
            features.append(feature)
    if not features:
        raise TrainingError(f"no usable feature columns besides {target!r}")
    X = feature_matrix(labelled, features)
    return Dataset(
        features=features,
        X=X,
        y=y,
        task=task,
        rows=len(labelled),
        sha256=sha256_file(path),
        example=pick_example(X, features),
        notes=notes,
    )


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


def infer_feature(name: str, column: pd.Series) -> tuple[Feature | None, str | None]:
    present = column.dropna()
    nullable = len(present) < len(column)
    if present.empty:
        return None, f"ignored column {name!r}: it has no values"
    if pd.api.types.is_bool_dtype(column) or all(isinstance(v, bool | np.bool_) for v in present):
        return Feature(name=name, type="boolean", nullable=nullable), None
    if pd.api.types.is_integer_dtype(column):
        return Feature(name=name, type="integer", nullable=nullable), None
    if pd.api.types.is_numeric_dtype(column):
        return Feature(name=name, type="number", nullable=nullable), None
    text = present.astype(str)
    distinct = text.nunique()
    if distinct == len(column) and len(column) >= 20:
        return None, f"ignored column {name!r}: every value is different, like an identifier"
    categories = sorted(text.unique().tolist())
    return Feature(name=name, type="string", nullable=nullable, categories=categories), None


def feature_matrix(
    frame: pd.DataFrame, features: list[Feature]
) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Rows as plain Python values in feature order, missing as NaN: exactly what serving sends."""
    columns = []
    for feature in features:
        column = frame[feature.name]
        if feature.type == "number":
            values = [float(v) for v in column.to_numpy(dtype=float)]
        else:
            values = [_plain(v, feature.type) for v in column.tolist()]
        columns.append(values)
    matrix = np.empty((len(frame), len(features)), dtype=object)
    for index, values in enumerate(columns):
        matrix[:, index] = values
    return matrix


def _plain(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return math.nan
    if kind == "boolean":
        return bool(value)
    if kind == "integer":
        return int(value)
    return str(value)


def pick_example(
    X: np.ndarray[Any, np.dtype[np.object_]], features: list[Feature]
) -> dict[str, Any]:
    """The first complete row (or the first row), as JSON values, to show in the API docs."""

    def missing(v: Any) -> bool:
        return isinstance(v, float) and math.isnan(v)

    row = next((r for r in X if not any(missing(v) for v in r)), X[0])
    return {f.name: (None if missing(v) else v) for f, v in zip(features, row, strict=True)}
