"""Rows built to find where a compiled graph and its pipeline disagree, not only rows they saw.

Each kind is a family of places where a graph that rounds or compares differently would show
it: the training and held-out rows themselves; edges (each gap, every category and an unseen
one, each number's extremes and a little beyond, zero and negative zero); every split threshold
of every tree and its nearest float64 and float32 neighbours; integers around 2^24 and 2^53,
where float32 and then float64 stop holding every integer; and random rows drawn from the
training profile. Every row starts from a real training row, so each probe varies one thing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelstore import Feature

RANDOM_ROWS = 2000
MAX_THRESHOLDS_PER_FEATURE = 400
UNSEEN_CATEGORY = "(a category never seen in training)"
_LARGE = [2**24 - 1, 2**24, 2**24 + 1, 2**31 + 1, 2**53 - 1, 2**53, 2**53 + 2]

Rows = np.ndarray[Any, np.dtype[np.object_]]


def probe_rows(
    pipeline: Any, features: list[Feature], rows: Rows, seed: int = 0
) -> dict[str, Rows]:
    """The rows of each kind (a kind with nothing to probe is left out)."""
    rng = np.random.default_rng(seed)
    template = list(rows[0])
    kinds = {
        "data": rows,
        "edges": _matrix(_edges(features, rows, template)),
        "thresholds": _matrix(_thresholds(pipeline, features, template)),
        "large integers": _matrix(_large_integers(features, template)),
        "random": _random(features, rows, rng),
    }
    return {kind: made for kind, made in kinds.items() if len(made)}


def _variant(template: list[Any], index: int, value: Any) -> list[Any]:
    row = list(template)
    row[index] = value
    return row


def _edges(features: list[Feature], rows: Rows, template: list[Any]) -> list[list[Any]]:
    made = []
    for index, feature in enumerate(features):
        if feature.nullable:
            made.append(_variant(template, index, math.nan))
        if feature.type == "string":
            for category in [*(feature.categories or []), UNSEEN_CATEGORY]:
                made.append(_variant(template, index, category))
        elif feature.type == "boolean":
            made += [_variant(template, index, value) for value in (True, False)]
        else:
            present = _present(rows[:, index])
            if not present:
                continue
            low, high = min(present), max(present)
            margin = max((high - low) * 0.1, 1.0)
            values = [low, high, low - margin, high + margin, 0.0, -0.0]
            if feature.type == "integer":
                values = [float(round(v)) for v in values[:4]] + [0.0]
            made += [_variant(template, index, value) for value in values]
    return made


def _thresholds(pipeline: Any, features: list[Feature], template: list[Any]) -> list[list[Any]]:
    """Each numeric feature at every split threshold and its neighbours either side (float64
    and float32), so a graph that moves a threshold by one step is caught."""
    numeric = [i for i, f in enumerate(features) if f.type in ("number", "integer")]
    found: dict[int, set[float]] = {}
    for column, threshold in tree_splits(pipeline.named_steps["model"]):
        if column < len(numeric):  # columns after these are booleans and one-hot categories
            found.setdefault(numeric[column], set()).add(threshold)
    made = []
    for index, thresholds in sorted(found.items()):
        chosen = sorted(thresholds)
        if len(chosen) > MAX_THRESHOLDS_PER_FEATURE:
            step = len(chosen) / MAX_THRESHOLDS_PER_FEATURE
            chosen = [chosen[int(i * step)] for i in range(MAX_THRESHOLDS_PER_FEATURE)]
        for t in chosen:
            single = np.float32(t)
            around = {
                t,
                float(np.nextafter(t, -math.inf)),
                float(np.nextafter(t, math.inf)),
                float(single),
                float(np.nextafter(single, np.float32(-math.inf))),
                float(np.nextafter(single, np.float32(math.inf))),
            }
            if features[index].type == "integer":
                around |= {float(math.floor(t)), float(math.ceil(t))}
            made += [_variant(template, index, value) for value in sorted(around)]
    return made


def tree_splits(model: Any) -> list[tuple[int, float]]:
    """(column, threshold) of every split of a tree model; nothing for other families."""
    found: list[tuple[int, float]] = []
    for tree in getattr(model, "estimators_", []):
        t = tree.tree_
        inner = t.children_left != -1
        found += zip(t.feature[inner].tolist(), t.threshold[inner].tolist(), strict=True)
    for iteration in getattr(model, "_predictors", []):
        for predictor in iteration:
            nodes = predictor.nodes
            inner = nodes["is_leaf"] == 0
            found += zip(
                nodes["feature_idx"][inner].tolist(),
                nodes["num_threshold"][inner].tolist(),
                strict=True,
            )
    return found


def _large_integers(features: list[Feature], template: list[Any]) -> list[list[Any]]:
    made = []
    for index, feature in enumerate(features):
        if feature.type == "integer":
            made += [_variant(template, index, float(s * v)) for v in _LARGE for s in (1, -1)]
    return made


def _random(features: list[Feature], rows: Rows, rng: np.random.Generator) -> Rows:
    """Each column drawn on its own: half from the training values, half (for numbers)
    uniform over their range, so combinations training never had come up."""
    count = RANDOM_ROWS
    made = np.empty((count, len(features)), dtype=object)
    for index, feature in enumerate(features):
        column = rows[:, index]
        drawn = column[rng.integers(0, len(column), count)]
        present = _present(column) if feature.type in ("number", "integer") else []
        if present:
            uniform = rng.uniform(min(present), max(present), count)
            if feature.type == "integer":
                uniform = np.round(uniform)
            pick = rng.random(count) < 0.5
            drawn = np.where(pick, uniform.astype(object), drawn)
        made[:, index] = drawn
    return made


def _present(column: Any) -> list[float]:
    return [
        float(v) for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]


def _matrix(made: list[list[Any]]) -> Rows:
    matrix = np.empty((len(made), len(made[0]) if made else 0), dtype=object)
    for i, row in enumerate(made):
        matrix[i] = row
    return matrix
