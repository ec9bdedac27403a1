"""Drift: live inputs counted into the training profile's bins, and the PSI of a recent window.

The request path only appends the validated table to a list (well under a microsecond). Once a
block's worth of rows (a tenth of the window) is pending, FOLD_SECONDS have passed, or /metrics
is scraped, the pending tables are binned in one pass per feature, which is where numpy pays
off, and the gauges are recomputed. The window is the last `window` rows plus at most one
block: old rows leave it a block at a time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from modelstore import Metadata
from modelstore.metadata import FeatureProfile
from modelstore.profile import Binner, psi
from service.metrics import Metrics
from service.predictor import Table

BLOCKS: Final = 10
FOLD_SECONDS: Final = 1.0
# Below this many values of a feature in the window its PSI is mostly noise: NaN until then.
MIN_ROWS: Final = 100


def bin_labels(profile: FeatureProfile) -> list[str]:
    """Prometheus-style: a number bin by its upper edge (`le`), a category bin by its name."""
    if profile.edges is not None:
        return [f"{edge:.6g}" for edge in profile.edges] + ["+Inf"]
    return [*(profile.categories or []), "(other)"]


@dataclass
class _Feature:
    name: str
    binner: Binner
    reference: list[float]
    psi: Any  # gauge child
    missing: Any  # counter child
    bins: list[Any]  # counter children, one per bin


class DriftMonitor:
    def __init__(self, metadata: Metadata, window: int, metrics: Metrics) -> None:
        if metadata.profile is None:
            raise ValueError("the version has no training profile")
        self._features = [
            _Feature(
                name=p.name,
                binner=Binner(p),
                reference=p.shares,
                psi=metrics.feature_psi.labels(p.name),
                missing=metrics.feature_missing.labels(p.name),
                bins=[metrics.feature_values.labels(p.name, label) for label in bin_labels(p)],
            )
            for p in metadata.profile
        ]
        for feature in self._features:
            feature.psi.set(math.nan)
        self._window_gauge = metrics.drift_window_rows
        self._block_rows = max(window // BLOCKS, 1)
        width = max(f.binner.bins for f in self._features)
        self._window = max(window, 1)
        self._blocks: deque[tuple[int, np.ndarray[Any, Any]]] = deque()
        self._block_total = 0
        self._shape = (len(self._features), width)
        self._current = np.zeros(self._shape, dtype=np.int64)
        self._current_rows = 0
        self._pending: list[Table] = []
        self._pending_rows = 0
        self._last_fold = time.monotonic()

    def observe(self, table: Table) -> None:
        """The request path: remember the rows; bin them later, many requests at once."""
        self._pending.append(table)
        self._pending_rows += table.rows
        if self._pending_rows >= self._block_rows or time.monotonic() - self._last_fold > FOLD_SECONDS:
            self.fold()

    def fold(self) -> None:
        tables, self._pending, self._pending_rows = self._pending, [], 0
        self._last_fold = time.monotonic()
        if not tables:
            return
        rows = sum(t.rows for t in tables)
        for index, feature in enumerate(self._features):
            name = feature.name
            present = [v for t in tables for v in t.columns[name] if v is not None and v == v]
            if len(present) < rows:
                feature.missing.inc(rows - len(present))
            counts = feature.binner.count(present)
            self._current[index, : len(counts)] += counts
            for child, count in zip(feature.bins, counts.tolist(), strict=True):
                if count:
                    child.inc(count)
        self._current_rows += rows
        if self._current_rows >= self._block_rows:
            self._blocks.append((self._current_rows, self._current))
            self._block_total += self._current_rows
            self._current = np.zeros(self._shape, dtype=np.int64)
            self._current_rows = 0
            while self._block_total - self._blocks[0][0] >= self._window:
                self._block_total -= self._blocks.popleft()[0]
        self._update_gauges()

    def _update_gauges(self) -> None:
        window_rows = self._current_rows + self._block_total
        self._window_gauge.set(window_rows)
        live = self._current + sum((counts for _, counts in self._blocks), np.int64(0))
        for index, feature in enumerate(self._features):
            counts = live[index, : feature.binner.bins]
            enough = counts.sum() >= MIN_ROWS
            feature.psi.set(psi(feature.reference, counts) if enough else math.nan)
