"""Held-out scores for the metadata, the summary table and the quality gate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from training.config import LOWER_IS_BETTER, GateSection
from training.errors import QualityGateError


def score(
    model: Any, X: np.ndarray[Any, Any], y: np.ndarray[Any, Any], task: str
) -> dict[str, float]:
    predicted = model.predict(X)
    if task == "regression":
        return {
            "rmse": float(math.sqrt(mean_squared_error(y, predicted))),
            "mae": float(mean_absolute_error(y, predicted)),
            "r2": float(r2_score(y, predicted)),
        }
    metrics = {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1_macro": float(f1_score(y, predicted, average="macro")),
    }
    auc = _roc_auc(model, X, y)
    if auc is not None:
        metrics["roc_auc"] = auc
    return metrics


def _roc_auc(model: Any, X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float | None:
    """ROC AUC needs probabilities and every class present in the held-out rows."""
    if not hasattr(model, "predict_proba"):
        return None
    classes = list(model.classes_)
    if len(set(y.tolist())) != len(classes):
        return None
    proba = model.predict_proba(X)
    if len(classes) == 2:
        positive = np.asarray(y == classes[1], dtype=int)
        return float(roc_auc_score(positive, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


def check_gate(gate: GateSection | None, metrics: dict[str, float]) -> None:
    if gate is None:
        return
    value = metrics.get(gate.metric)
    if value is None:
        raise QualityGateError(
            f"quality gate metric {gate.metric} was not computed for this model; nothing published"
        )
    if gate.metric in LOWER_IS_BETTER:
        if value > gate.threshold:
            raise QualityGateError(
                f"quality gate not met: {gate.metric} {value:.4f} > {gate.threshold}; "
                "nothing published"
            )
    elif value < gate.threshold:
        raise QualityGateError(
            f"quality gate not met: {gate.metric} {value:.4f} < {gate.threshold}; nothing published"
        )
