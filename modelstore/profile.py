"""Feature profiles: the bins training records and the service counts live inputs into.

One module owns the binning so the reference (training) and the live counts (serving) can never
disagree about which bin a value falls in. Only numpy: the serving image imports it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from modelstore.metadata import Feature, FeatureProfile

# A dozen bins per feature keeps the live label sets small and each bin well filled.
MAX_BINS: Final = 12
NUMBER_BINS: Final = 10
# Shares below this count as this when computing the PSI, so an empty bin gives a large but
# finite term instead of infinity.
SHARE_FLOOR: Final = 1e-4


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def category_key(value: Any) -> str:
    """Booleans as `true`/`false` (what the API and class keys use); strings as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_profile(feature: Feature, values: Sequence[Any]) -> FeatureProfile:
    present = [v for v in values if not is_missing(v)]
    if feature.type in ("number", "integer"):
        numbers = np.asarray(present, dtype=np.float64)
        if numbers.size == 0:
            edges: list[float] = [0.0]
        else:
            # Observed values as edges (no interpolation): repeated integers keep whole edges.
            cuts = np.quantile(
                numbers, np.linspace(0, 1, NUMBER_BINS + 1)[1:-1], method="inverted_cdf"
            )
            # Ten significant digits: readable in the metadata, and shares are counted after.
            edges = sorted({float(f"{c:.10g}") for c in cuts})
        profile = FeatureProfile(
            name=feature.name, missing=0.0, edges=edges, shares=[0.0] * (len(edges) + 1)
        )
    else:
        counts = Counter(category_key(v) for v in present)
        if feature.type == "boolean":
            categories = ["false", "true"]
        else:
            # The most frequent categories get a bin each; ties go to the alphabetically first.
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            categories = [name for name, _ in ranked[: MAX_BINS - 1]]
        profile = FeatureProfile(
            name=feature.name,
            missing=0.0,
            categories=categories,
            shares=[0.0] * (len(categories) + 1),
        )
    # The shares and the missing share as the service will count them, by the same Binner.
    histogram, gaps = Binner(profile).count(list(values))
    total = int(histogram.sum())
    shares = [round(float(c) / total, 6) if total else 0.0 for c in histogram]
    missing = round(gaps / len(values), 6) if values else 0.0
    return profile.model_copy(update={"shares": shares, "missing": missing})


class NumberBins:
    """Counts numbers into the bins of several features at once: a value's bin is how many of
    its feature's edges lie below it (so a value equal to an edge is in the bin that edge
    closes); NaN is missing. The drift monitor bins all its number features in a few numpy calls
    per batch of requests, not a few per feature."""

    def __init__(self, edges: Sequence[Sequence[float]]) -> None:
        self.edges = [np.asarray(e, dtype=np.float64) for e in edges]
        self.bins = max((len(e) + 1 for e in edges), default=1)
        # Edge k of every feature as a column, +inf past a feature's last edge: how many of a
        # feature's values lie at or below each of its edges is then a comparison per edge, the
        # same for every feature. (A binary search per value branches unpredictably, and is
        # two to three times slower on a few edges.)
        padded = np.full((len(self.edges), self.bins - 1), np.inf)
        for row, feature_edges in enumerate(self.edges):
            padded[row, : len(feature_edges)] = feature_edges
        self._edge_columns = [np.ascontiguousarray(padded[:, [k]]) for k in range(self.bins - 1)]

    def count(
        self, numbers: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
        """`numbers` holds a feature per row, in the order of the edges; the bin counts (a
        feature per row, `bins` wide: a feature with fewer edges leaves the last ones at 0) and
        each feature's count of missing values."""
        features = len(self.edges)
        hits = np.empty(numbers.shape, dtype=bool)
        flags = hits.view(np.uint8)  # summed as bytes into 32 bits: faster than as booleans
        np.isnan(numbers, out=hits)
        gaps = flags.sum(axis=1, dtype=np.int64)
        # at_or_below[:, k + 1]: values at or below edge k (NaN is below nothing); the last
        # column, every present value; each bin is the difference of two neighbours.
        at_or_below = np.zeros((features, self.bins + 1), dtype=np.int64)
        for k, column in enumerate(self._edge_columns):
            np.less_equal(numbers, column, out=hits)
            at_or_below[:, k + 1] = flags.sum(axis=1, dtype=np.uint32)
        at_or_below[:, -1] = numbers.shape[1] - gaps
        return np.diff(at_or_below, axis=1), gaps


class Binner:
    """Counts present values into a profile's bins."""

    def __init__(self, profile: FeatureProfile) -> None:
        self.bins = len(profile.shares)
        self._numbers = NumberBins([profile.edges]) if profile.edges is not None else None
        self._index = {c: i for i, c in enumerate(profile.categories or [])}

    def count(
        self, values: Sequence[Any] | np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int]:
        """Bin counts of the values, and how many were missing (None or NaN).

        Built for the service's folds of thousands of values: numpy and Counter do the
        per-value work in C.
        """
        if self._numbers is not None:
            numbers = np.asarray(values, dtype=np.float64).reshape(1, -1)  # None becomes NaN
            binned, gaps = self._numbers.count(numbers)
            return binned[0], int(gaps[0])
        counts = np.zeros(self.bins, dtype=np.int64)
        other, missing = self.bins - 1, 0
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":  # booleans as 1.0 / 0.0
            gaps = np.isnan(values)
            present = values[~gaps]
            for key, number in (("false", 0.0), ("true", 1.0)):
                counts[self._index.get(key, other)] += int((present == number).sum())
            counts[other] += int(present.size - ((present == 0.0) | (present == 1.0)).sum())
            return counts, int(gaps.sum())
        for value, count in Counter(values).items():  # distinct values are few
            if is_missing(value):
                missing += count
            else:
                counts[self._index.get(category_key(value), other)] += count
        return counts, missing


def psi(reference: Sequence[float], live: np.ndarray[Any, Any]) -> float:
    """The population stability index of live bin counts against reference shares."""
    total = float(live.sum())
    if total == 0:
        return math.nan
    expected = np.maximum(np.asarray(reference, dtype=np.float64), SHARE_FLOOR)
    actual = np.maximum(live / total, SHARE_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
