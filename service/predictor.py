"""The model layer: validated instances in, predictions out. No web framework here."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np
import sklearn

from modelstore import LoadedModel, class_key

_NAN = math.nan


class NonFinitePredictionError(Exception):
    """The model produced NaN or infinity for these rows (inputs beyond what it can handle)."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"non-finite prediction for rows {rows}")
        self.rows = rows


class Predictor:
    """Wraps one loaded pipeline; everything reusable is computed once, here."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.metadata = loaded.metadata
        self.estimator = loaded.estimator
        self.feature_names = [f.name for f in loaded.metadata.features]
        self.is_classifier = loaded.metadata.task == "classification"
        if self.is_classifier:
            self.classes = [
                c.item() if isinstance(c, np.generic) else c for c in self.estimator.classes_
            ]
            self.class_keys = [class_key(c) for c in self.classes]
        self.fixed_cost, self.row_cost = self._measure()

    def rows(self, instances: list[dict[str, Any]]) -> np.ndarray[Any, np.dtype[np.object_]]:
        """Instances as a 2-D object array in feature order; null becomes NaN for the imputers."""
        names = self.feature_names
        matrix = np.empty((len(instances), len(names)), dtype=object)
        for i, instance in enumerate(instances):
            matrix[i] = [_NAN if (v := instance[n]) is None else v for n in names]
        return matrix

    def predict(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        X = self.rows(instances)
        # Inputs are already validated as finite, so scikit-learn may skip its own checks. Huge
        # inputs may still overflow inside the model: the result is checked instead of warned.
        with (
            sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
            np.errstate(all="ignore"),
        ):
            if not self.is_classifier:
                values = self.estimator.predict(X)
                _check_finite(values)
                return [{"value": v} for v in values.tolist()]
            proba = self.estimator.predict_proba(X)
        _check_finite(proba)
        best = proba.argmax(axis=1).tolist()
        keys, classes = self.class_keys, self.classes
        return [
            {"label": classes[b], "probabilities": dict(zip(keys, p, strict=True))}
            for b, p in zip(best, proba.tolist(), strict=True)
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


def _check_finite(values: np.ndarray[Any, Any]) -> None:
    """JSON has no infinity: huge but finite inputs can overflow a linear model."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite if finite.ndim == 1 else ~finite.all(axis=1)
        raise NonFinitePredictionError(np.flatnonzero(bad).tolist())
