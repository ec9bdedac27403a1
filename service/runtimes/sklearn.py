"""The scikit-learn runtime: the pickled pipeline, for versions without a verified graph.

Only the `-sklearn` image (and the development virtualenv) can load this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sklearn
from threadpoolctl import threadpool_limits

from modelstore import Metadata
from service.runtimes.base import Columns, Predictor, text_with_gaps_as


class SklearnPredictor(Predictor):
    runtime = "sklearn"

    def __init__(self, metadata: Metadata, estimator: Any) -> None:
        # One BLAS thread per process: requests are small and parallelism comes from workers.
        threadpool_limits(1)
        self.estimator = estimator
        super().__init__(metadata)

    def matrix(self, columns: Columns, rows: int) -> np.ndarray[Any, np.dtype[np.object_]]:
        """The rows as a 2-D object array in feature order; a gap is NaN for the imputers."""
        matrix = np.empty((rows, len(self.feature_names)), dtype=object)
        for j, (name, is_text) in enumerate(self.kinds):
            column = columns[name]
            matrix[:, j] = text_with_gaps_as(column, math.nan) if is_text else column
        return matrix

    def compute_columns(self, columns: Columns, rows: int) -> np.ndarray[Any, Any]:
        X = self.matrix(columns, rows)
        # Inputs are already validated as finite, so scikit-learn may skip its own checks. Huge
        # inputs may still overflow inside the model: the result is checked instead of warned.
        with (
            sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
            np.errstate(all="ignore"),
        ):
            if self.is_classifier:
                return np.asarray(self.estimator.predict_proba(X), dtype=float)
            return np.asarray(self.estimator.predict(X), dtype=float)
