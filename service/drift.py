"""Drift: live inputs counted into the training profile's bins, and the PSI of a recent window.

The request path only appends the validated values to one list per feature (a microsecond or
two). Once a block's worth of rows (a tenth of the window) is pending, FOLD_SECONDS have
passed, or /metrics is scraped, they are binned: every number feature at once, in a few numpy
calls (`NumberBins`), then the other features one by one. The PSI gauges and the bin counters
are brought up to date on a scrape and at most once a second otherwise (a counter's increment
is a Python call, and there is one per bin). The window is the last `window` rows plus at most
one block: old rows leave it a block at a time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

import numpy as np

from modelstore import Metadata
from modelstore.metadata import FeatureProfile
from modelstore.profile import Binner, NumberBins, psi
from service.metrics import Metrics, multiprocess_dir
from service.runtimes.base import Table, typed_column

BLOCKS: Final = 10
FOLD_SECONDS: Final = 1.0
# Below this many values of a feature in the window its PSI is mostly noise: NaN until then.
MIN_ROWS: Final = 100


def bin_labels(profile: FeatureProfile) -> list[str]:
    """A number bin by its index from the lowest (its edges are training statistics, in the
    keyed metadata's profile); a category bin by its name, which the open request schema
    lists anyway."""
    if profile.edges is not None:
        return [str(index) for index in range(len(profile.edges) + 1)]
    return [*(profile.categories or []), "(other)"]


@dataclass
class _Feature:
    name: str
    is_text: bool  # a string feature (its column holds text, not numbers or 1.0 / 0.0)
    binner: Binner
    reference: list[float]
    psi: Any  # gauge child
    missing: Any  # counter child
    bins: list[Any]  # counter children, one per bin


class DriftMonitor:
    def __init__(self, metadata: Metadata, window: int, metrics: Metrics) -> None:
        if metadata.profile is None:
            raise ValueError("the version has no training profile")
        text = {f.name: f.type == "string" for f in metadata.features}
        self._features = [
            _Feature(
                name=p.name,
                is_text=text[p.name],
                binner=Binner(p),
                reference=p.shares,
                psi=metrics.feature_psi.labels(p.name),
                missing=metrics.feature_missing.labels(p.name),
                bins=[metrics.feature_values.labels(p.name, label) for label in bin_labels(p)],
            )
            for p in metadata.profile
        ]
        # "Not enough values yet": NaN in one process. With several, each worker's gauge is
        # combined by taking the largest, and NaN compares false both ways (one quiet worker's
        # NaN would hide the others' values), so there it is -Inf, the largest-of identity.
        self._no_value = -math.inf if multiprocess_dir() else math.nan
        for feature in self._features:
            feature.psi.set(self._no_value)
        self._window_gauge = metrics.drift_window_rows
        self._block_rows = max(window // BLOCKS, 1)
        width = max(f.binner.bins for f in self._features)
        self._window = max(window, 1)
        self._blocks: deque[tuple[int, np.ndarray[Any, Any]]] = deque()
        self._block_total = 0
        self._shape = (len(self._features), width)
        self._current = np.zeros(self._shape, dtype=np.int64)
        self._current_rows = 0
        # Number features are binned together; the others (text, booleans) one by one.
        profiles = list(metadata.profile)
        self._numbered = [i for i, p in enumerate(profiles) if p.edges is not None]
        self._numbers = NumberBins([p.edges for p in profiles if p.edges is not None])
        self._others = [i for i in range(len(self._features)) if i not in self._numbered]
        # Counted since the counters were last increased (see `_publish`).
        self._unpublished = np.zeros(self._shape, dtype=np.int64)
        self._unpublished_missing = np.zeros(len(self._features), dtype=np.int64)
        # Pending columns, a list of each request's column (typed arrays) per feature: arrays
        # hold no Python objects for numbers, so holding them costs the garbage collector
        # nothing.
        self._pending: list[tuple[str, list[Any]]] = [(f.name, []) for f in self._features]
        self._pending_rows = 0
        self._last_fold = self._last_gauges = time.monotonic()

    def observe(self, table: Table) -> None:
        """The request path: remember the request's columns; bin them later, many requests at
        once."""
        columns = table.columns
        for name, chunks in self._pending:
            chunks.append(columns[name])
        self._pending_rows += table.rows
        if (
            self._pending_rows >= self._block_rows
            or time.monotonic() - self._last_fold > FOLD_SECONDS
        ):
            self.fold(gauges=False)

    def fold(self, gauges: bool = True) -> None:
        """Bin what is pending. The PSI gauges are recomputed when asked (a scrape) and at
        most every FOLD_SECONDS otherwise: each worker's gauges must stay fresh for a scrape
        that another worker answers."""
        pending, rows = self._pending, self._pending_rows
        self._pending = [(name, []) for name, _ in pending]
        self._pending_rows = 0
        now = self._last_fold = time.monotonic()
        if rows:
            self._count(pending, rows)
        if gauges or now - self._last_gauges > FOLD_SECONDS:
            self._last_gauges = now
            self._publish()
            self._update_gauges()

    def _count(self, pending: list[tuple[str, list[Any]]], rows: int) -> None:
        counts = np.zeros(self._shape, dtype=np.int64)
        missing = np.zeros(len(self._features), dtype=np.int64)
        if self._numbered:
            numbers = np.empty((len(self._numbered), rows), dtype=np.float64)
            for slot, index in enumerate(self._numbered):
                _numbers_into(numbers[slot], pending[index][1])
            binned, gaps = self._numbers.count(numbers)
            counts[self._numbered, : binned.shape[1]] = binned
            missing[self._numbered] = gaps
        for index in self._others:
            feature = self._features[index]
            binned_one, gap_count = feature.binner.count(
                _joined(pending[index][1], feature.is_text)
            )
            counts[index, : len(binned_one)] = binned_one
            missing[index] = gap_count
        self._current += counts
        self._unpublished += counts
        self._unpublished_missing += missing
        self._current_rows += rows
        if self._current_rows >= self._block_rows:
            self._blocks.append((self._current_rows, self._current))
            self._block_total += self._current_rows
            self._current = np.zeros(self._shape, dtype=np.int64)
            self._current_rows = 0
            while self._block_total - self._blocks[0][0] >= self._window:
                self._block_total -= self._blocks.popleft()[0]

    def _publish(self) -> None:
        """The bin and missing counters, increased by what was counted since the last time."""
        counts, missing = self._unpublished, self._unpublished_missing
        self._unpublished = np.zeros(self._shape, dtype=np.int64)
        self._unpublished_missing = np.zeros(len(self._features), dtype=np.int64)
        for feature, row, gaps in zip(
            self._features, counts.tolist(), missing.tolist(), strict=True
        ):
            if gaps:
                feature.missing.inc(gaps)
            for child, count in zip(feature.bins, row, strict=False):
                if count:
                    child.inc(count)

    def _update_gauges(self) -> None:
        window_rows = self._current_rows + self._block_total
        self._window_gauge.set(window_rows)
        live = self._current + sum((counts for _, counts in self._blocks), np.int64(0))
        for index, feature in enumerate(self._features):
            counts = live[index, : feature.binner.bins]
            enough = counts.sum() >= MIN_ROWS
            feature.psi.set(psi(feature.reference, counts) if enough else self._no_value)


def _numbers_into(row: np.ndarray[Any, Any], chunks: list[Any]) -> None:
    """A number feature's pending columns written into its row of the fold's matrix, without
    an intermediate copy when every request brought an array (as large ones do)."""
    if set(map(type, chunks)) <= {np.ndarray}:
        np.concatenate(chunks, out=row)
    else:
        row[:] = _joined(chunks, False)  # numpy reads None as NaN


def _joined(chunks: list[Any], is_text: bool) -> Any:
    """A feature's pending columns as one: a list when every request's column is a list (small
    requests), else one typed array."""
    if set(map(type, chunks)) <= {list}:  # C loops: a fold of 1-row requests has thousands
        return list(chain.from_iterable(chunks))
    return np.concatenate([typed_column(chunk, is_text) for chunk in chunks])
