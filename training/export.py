"""Compiling the fitted pipeline to ONNX, and checking the graph against it before publishing.

The graph takes one input per feature, in metadata order: `float` for numbers, integers and
booleans (NaN for a gap), `string` for strings ("" for a gap). ONNX Runtime's Imputer is
float-only, and skl2onnx's string imputer needs a string marker, so the conversion works on a
copy of the pipeline whose string imputers treat "" as missing: the CSV reader never yields an
empty string as a category, so "" cannot collide with a real value.

The check compares both on every training and held-out row plus synthetic rows (each nullable
feature missing, every known category, each number's minimum and maximum): the same label on
every row and probabilities within PROBABILITY_TOLERANCE, or values within VALUE_TOLERANCE
times the target's standard deviation.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelstore import GRAPH_FILE, CompiledInfo, Feature
from modelstore.spec import graph_input_names
from modelstore.store import sha256_bytes

PROBABILITY_TOLERANCE = 1e-4
VALUE_TOLERANCE = 1e-4  # times the target's standard deviation
OPSET = {"": 17, "ai.onnx.ml": 3}
MISSING_STRING = ""


@dataclass(frozen=True)
class Compiled:
    graph: bytes | None
    info: CompiledInfo


def graph_inputs(
    features: list[Feature], rows: np.ndarray[Any, np.dtype[np.object_]]
) -> dict[str, np.ndarray[Any, Any]]:
    """Rows (a 2-D object array in feature order, NaN for gaps) as the graph's input tensors."""
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    names = graph_input_names([f.name for f in features])
    for index, (feature, name) in enumerate(zip(features, names, strict=True)):
        column = rows[:, index]
        if feature.type == "string":
            values = [MISSING_STRING if _missing(v) else str(v) for v in column]
            feeds[name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            numbers = [math.nan if _missing(v) else float(v) for v in column]
            feeds[name] = np.array(numbers, dtype=np.float32).reshape(-1, 1)
    return feeds


def compile_pipeline(
    pipeline: Any,
    features: list[Feature],
    task: str,
    rows: np.ndarray[Any, np.dtype[np.object_]],
    target_std: float,
) -> Compiled:
    """Convert and verify; a failure is recorded (with its reason), never raised."""
    kind = "probability" if task == "classification" else "value"
    tolerance = PROBABILITY_TOLERANCE if task == "classification" else _value_tolerance(target_std)
    synthetic = synthetic_rows(features, rows)
    checked = np.concatenate([rows, synthetic]) if len(synthetic) else rows
    base: dict[str, Any] = {
        "deviation": kind,
        "tolerance": tolerance,
        "checked_rows": len(rows),
        "synthetic_rows": len(synthetic),
        "tools": _tools(),
    }
    try:
        graph = convert(pipeline, features, task)
    except Exception as exc:  # skl2onnx raises many kinds for what it cannot convert
        reason = f"conversion failed: {_first_line(exc)}"
        return Compiled(None, CompiledInfo(verified=False, reason=reason, **base))
    try:
        deviation, labels_identical = compare(pipeline, graph, features, task, checked)
    except Exception as exc:  # the runtime refusing the graph is a failed check too
        reason = f"ONNX Runtime could not run the graph: {_first_line(exc)}"
        return Compiled(None, CompiledInfo(verified=False, reason=reason, **base))
    base.update(max_deviation=deviation, labels_identical=labels_identical)
    failure = _failure(deviation, tolerance, labels_identical, kind)
    if failure:
        return Compiled(None, CompiledInfo(verified=False, reason=failure, **base))
    info = CompiledInfo(
        verified=True,
        file=GRAPH_FILE,
        sha256=sha256_bytes(graph),
        bytes=len(graph),
        inputs=graph_input_names([f.name for f in features]),
        **base,
    )
    return Compiled(graph, info)


def convert(pipeline: Any, features: list[Feature], task: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    prepared = copy.deepcopy(pipeline)
    for name, transformer, _ in prepared.named_steps["preprocess"].transformers_:
        if name == "categorical":
            transformer.named_steps["impute"].missing_values = MISSING_STRING
        elif name == "boolean":
            # Most-frequent imputation of booleans, as floats: the graph's Imputer is float-only.
            transformer.statistics_ = transformer.statistics_.astype(float)
            transformer._fit_dtype = np.dtype(float)
    names = graph_input_names([f.name for f in features])
    inputs = [
        (name, StringTensorType([None, 1]) if f.type == "string" else FloatTensorType([None, 1]))
        for name, f in zip(names, features, strict=True)
    ]
    options = {id(prepared): {"zipmap": False}} if task == "classification" else None
    with warnings.catch_warnings():
        # skl2onnx 1.20's gradient-boosting converters hand protobuf booleans for an integer
        # attribute: protobuf 6.33 (pinned) converts them with this warning, 7.34 refuses.
        warnings.filterwarnings("ignore", "Field onnx.AttributeProto.ints: Expected an int")
        # A fixed graph name (skl2onnx picks a random one), so the same fit gives the same bytes.
        model = convert_sklearn(
            prepared, name="pipeline", initial_types=inputs, options=options, target_opset=OPSET
        )
    # skl2onnx lists the operator domains it used in the order of a set: sorted, so the same
    # fit gives the same bytes in every run.
    ordered = sorted(model.opset_import, key=lambda entry: (entry.domain, entry.version))
    del model.opset_import[:]
    model.opset_import.extend(ordered)
    graph: bytes = model.SerializeToString(deterministic=True)
    return graph


def compare(
    pipeline: Any,
    graph: bytes,
    features: list[Feature],
    task: str,
    rows: np.ndarray[Any, np.dtype[np.object_]],
) -> tuple[float, bool | None]:
    """The largest deviation, and whether every label agrees (classification)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    outputs = session.run(None, graph_inputs(features, rows))
    if task == "classification":
        expected = pipeline.predict_proba(rows)
        got = np.asarray(outputs[1], dtype=float)
        labels = bool(np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)))
        return float(np.abs(expected - got).max()), labels
    expected_values = pipeline.predict(rows)
    got_values = np.asarray(outputs[0], dtype=float).ravel()
    return float(np.abs(expected_values - got_values).max()), None


def synthetic_rows(
    features: list[Feature], rows: np.ndarray[Any, np.dtype[np.object_]]
) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Edge rows built on the first row: each gap, each category, each number's extremes."""
    template = list(rows[0])
    made: list[list[Any]] = []

    def variant(index: int, value: Any) -> None:
        row = list(template)
        row[index] = value
        made.append(row)

    for index, feature in enumerate(features):
        if feature.nullable:
            variant(index, math.nan)
        if feature.type == "string":
            for category in feature.categories or []:
                variant(index, category)
        elif feature.type == "boolean":
            variant(index, True)
            variant(index, False)
        else:
            present = [float(v) for v in rows[:, index] if not _missing(v)]
            kind = int if feature.type == "integer" else float
            variant(index, kind(min(present)))
            variant(index, kind(max(present)))
    matrix = np.empty((len(made), len(features)), dtype=object)
    for i, row in enumerate(made):
        matrix[i] = row
    return matrix


def _value_tolerance(target_std: float) -> float:
    return VALUE_TOLERANCE * target_std if target_std > 0 else VALUE_TOLERANCE


def _failure(deviation: float, tolerance: float, labels: bool | None, kind: str) -> str | None:
    if labels is False:
        return "the graph predicts a different label than the pipeline on some rows"
    if not math.isfinite(deviation) or deviation > tolerance:
        return f"largest {kind} deviation {deviation:.3g} is over the tolerance {tolerance:.3g}"
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _tools() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("skl2onnx", "onnx", "onnxruntime")}
