"""Building the scikit-learn pipeline: preprocessing and estimator in one picklable object.

Columns are addressed by position, not by name, so the fitted pipeline takes rows as a plain
2-D object array in the metadata's feature order and serving never needs pandas. Only
scikit-learn's own classes go in, so unpickling needs no code from this package.
"""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelstore import Feature
from training.errors import TrainingError

ESTIMATORS: dict[tuple[str, str], tuple[type[Any], dict[str, Any]]] = {
    ("linear", "classification"): (LogisticRegression, {"max_iter": 2000}),
    ("linear", "regression"): (Ridge, {}),
    ("random_forest", "classification"): (RandomForestClassifier, {"n_estimators": 100}),
    ("random_forest", "regression"): (RandomForestRegressor, {"n_estimators": 100}),
    ("hist_gradient_boosting", "classification"): (HistGradientBoostingClassifier, {}),
    ("hist_gradient_boosting", "regression"): (HistGradientBoostingRegressor, {}),
}
MISSING_CATEGORY = "__missing__"


def make_estimator(family: str, task: str, params: dict[str, Any], seed: int) -> Any:
    cls, defaults = ESTIMATORS[(family, task)]
    known = cls().get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TrainingError(
            f"unknown parameter(s) {', '.join(unknown)} for {family} {task} ({cls.__name__})"
        )
    settings = {**defaults, **params}
    if "random_state" in known and "random_state" not in params:
        settings["random_state"] = seed
    return cls(**settings)


def effective_params(estimator: Any, family: str, task: str) -> dict[str, Any]:
    """The hyper-parameters that differ from scikit-learn's defaults, for the metadata."""
    cls, _ = ESTIMATORS[(family, task)]
    defaults = cls().get_params()
    return {
        key: value
        for key, value in sorted(estimator.get_params().items())
        if value != defaults.get(key) and isinstance(value, str | int | float | bool | None)
    }


def build_pipeline(features: list[Feature], estimator: Any, family: str) -> Pipeline:
    numeric = [i for i, f in enumerate(features) if f.type in ("number", "integer")]
    boolean = [i for i, f in enumerate(features) if f.type == "boolean"]
    strings = [i for i, f in enumerate(features) if f.type == "string"]
    scale = family == "linear"
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric:
        parts.append(("numeric", Pipeline(numeric_steps), numeric))
    if boolean:
        parts.append(("boolean", SimpleImputer(strategy="most_frequent"), boolean))
    if strings:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        parts.append(("categorical", categorical, strings))
    preprocess = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])
