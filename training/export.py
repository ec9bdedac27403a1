"""Compiling the fitted pipeline to ONNX, and checking the graph against it before publishing.

The graph (training/onnx_graph.py) takes one input per feature, in metadata order: float64 for
numbers, integers and booleans (NaN for a gap), strings for categories ("" for a gap: the table
reader never yields an empty category, so "" cannot collide with a real value).

The check looks for disagreement (training/probes.py): every training and held-out row, edges,
each tree's split thresholds and their neighbours, large integers and random rows from the
training profile. Every row must get the same label, and probabilities within
PROBABILITY_TOLERANCE, or values within VALUE_TOLERANCE times the target's standard deviation.
A graph that disagrees anywhere is not published; the metadata records how many rows of each
kind were compared and the largest deviation per kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelstore import GRAPH_FILE, CompiledInfo, Feature, ProbeCheck
from modelstore.spec import graph_input_names
from modelstore.store import sha256_bytes
from training.onnx_graph import MISSING_STRING, write_graph
from training.probes import probe_rows

PROBABILITY_TOLERANCE = 1e-9
# A value's deviation is relative to the larger of the target's standard deviation and the value
# itself: float64 keeps about 16 digits, so a regressor answering 1e16 for an integer near 2^53
# may differ in its last unit, and that is as close as the pipeline agrees with itself.
VALUE_TOLERANCE = 1e-9


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
            feeds[name] = np.array(numbers, dtype=np.float64).reshape(-1, 1)
    return feeds


def compile_pipeline(
    pipeline: Any,
    features: list[Feature],
    task: str,
    rows: np.ndarray[Any, np.dtype[np.object_]],
    target_std: float,
) -> Compiled:
    """Write and verify; a failure is recorded (with its reason), never raised."""
    kind = "probability" if task == "classification" else "value"
    tolerance = PROBABILITY_TOLERANCE if task == "classification" else VALUE_TOLERANCE
    scale = target_std if target_std > 0 else 1.0
    probes = probe_rows(pipeline, features, rows)
    base: dict[str, Any] = {
        "deviation": kind,
        "tolerance": tolerance,
        "checked_rows": len(rows),
        "synthetic_rows": sum(len(m) for k, m in probes.items() if k != "data"),
        "tools": _tools(),
        "precision": "float64",
    }
    try:
        graph = convert(pipeline, features, task)
    except Exception as exc:  # an estimator or step the writer cannot reproduce
        reason = f"conversion failed: {_first_line(exc)}"
        return Compiled(None, CompiledInfo(verified=False, reason=reason, **base))
    try:
        checks = {k: compare(pipeline, graph, features, task, m, scale) for k, m in probes.items()}
    except Exception as exc:  # the runtime refusing the graph is a failed check too
        reason = f"ONNX Runtime could not run the graph: {_first_line(exc)}"
        return Compiled(None, CompiledInfo(verified=False, reason=reason, **base))
    deviation = max(c.max_deviation for c in checks.values())
    labels = None if task != "classification" else all(c.labels_identical for c in checks.values())
    base.update(max_deviation=deviation, labels_identical=labels, checks=checks)
    failure = _failure(checks, tolerance, kind)
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
    """The graph's bytes: the one seam tests replace to prove a bad graph is refused."""
    return write_graph(pipeline, features, task)


def compare(
    pipeline: Any,
    graph: bytes,
    features: list[Feature],
    task: str,
    rows: np.ndarray[Any, np.dtype[np.object_]],
    scale: float = 1.0,
) -> ProbeCheck:
    """The largest deviation on these rows, and whether every label agrees (classification).
    Where both answers overflow to non-finite numbers they agree (the service refuses both)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    outputs = session.run(None, graph_inputs(features, rows))
    with np.errstate(all="ignore"):
        if task == "classification":
            expected = np.asarray(pipeline.predict_proba(rows), dtype=float)
            got = np.asarray(outputs[1], dtype=float)
            finite = np.isfinite(expected).all(axis=1) & np.isfinite(got).all(axis=1)
            same = expected.argmax(axis=1) == got.argmax(axis=1)
            labels = bool(np.all(same[finite]))
            return ProbeCheck(
                rows=len(rows), max_deviation=_largest(expected, got), labels_identical=labels
            )
        expected_values = np.asarray(pipeline.predict(rows), dtype=float)
        got_values = np.asarray(outputs[0], dtype=float).ravel()
        deviation = _largest(expected_values, got_values, scale)
        return ProbeCheck(rows=len(rows), max_deviation=deviation)


def _largest(
    expected: np.ndarray[Any, Any], got: np.ndarray[Any, Any], scale: float | None = None
) -> float:
    """The largest difference (relative to max(scale, |expected|) for values); infinite where
    only one side is finite."""
    if not np.array_equal(np.isfinite(expected), np.isfinite(got)):
        return math.inf
    both = np.isfinite(expected) & np.isfinite(got)
    if not both.any():
        return 0.0
    difference = np.abs(expected[both] - got[both])
    if scale is not None:
        difference = difference / np.maximum(scale, np.abs(expected[both]))
    return float(difference.max())


def _failure(checks: dict[str, ProbeCheck], tolerance: float, kind: str) -> str | None:
    for name, check in checks.items():
        if check.labels_identical is False:
            return f"the graph predicts a different label than the pipeline on some {name} rows"
    for name, check in checks.items():
        if not math.isfinite(check.max_deviation) or check.max_deviation > tolerance:
            return (
                f"largest {kind} deviation {check.max_deviation:.3g} on {name} rows is over the "
                f"tolerance {tolerance:.3g}"
            )
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _tools() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("onnx", "onnxruntime", "scikit-learn")}
