"""The model layer: validated instances in, predictions out. No web framework here.

One seam with two implementations: `predict_onnx.OnnxPredictor` runs the version's compiled
graph in ONNX Runtime, `predict_sklearn.SklearnPredictor` runs the pickled pipeline. This base
owns what they share: the answer's shape, class keys, the finiteness check and the timing the
dispatcher plans with.
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from modelstore import LoadedModel, Metadata, class_key


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
        self.is_classifier = metadata.task == "classification"
        self.classes: list[Any] = list(metadata.classes or [])
        self.class_keys = [class_key(c) for c in self.classes]
        self.fixed_cost, self.row_cost = self._measure()

    @abstractmethod
    def compute(self, instances: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
        """Class probabilities (n x classes, metadata order) or values (n), as float64."""

    def predict(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        output = self.compute(instances)
        _check_finite(output)
        if not self.is_classifier:
            return [{"value": v} for v in output.tolist()]
        best = output.argmax(axis=1).tolist()
        keys, classes = self.class_keys, self.classes
        return [
            {"label": classes[b], "probabilities": dict(zip(keys, p, strict=True))}
            for b, p in zip(best, output.tolist(), strict=True)
        ]

    def estimated_seconds(self, rows: int) -> float:
        return self.fixed_cost + self.row_cost * rows

    def _measure(self) -> tuple[float, float]:
        """Warm the model up and time it: a fixed cost per call plus a cost per row."""
        example = [dict(self.metadata.example)]

        def timed(batch: list[dict[str, Any]]) -> float:
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                self.predict(batch)
                samples.append(time.perf_counter() - started)
            return statistics.median(samples)

        one = timed(example)
        many = timed(example * 64)
        return one, max(0.0, (many - one) / 63)


def make_predictor(loaded: LoadedModel) -> Predictor:
    """The runtime the loader chose: a graph means ONNX Runtime, an estimator scikit-learn."""
    if loaded.graph is not None:
        from service.predict_onnx import OnnxPredictor

        return OnnxPredictor(loaded.metadata, loaded.graph)
    from service.predict_sklearn import SklearnPredictor

    return SklearnPredictor(loaded.metadata, loaded.estimator)


def _check_finite(values: np.ndarray[Any, Any]) -> None:
    """JSON has no infinity: huge but finite inputs can overflow a linear model."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite if finite.ndim == 1 else ~finite.all(axis=1)
        raise NonFinitePredictionError(np.flatnonzero(bad).tolist())
