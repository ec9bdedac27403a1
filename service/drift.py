"""Drift: live inputs counted into the training profile's bins, and the PSI of a recent window.

The request path only appends the request's typed block of numbers (and its text columns) to a
list. Once a block's worth of rows (a tenth of the window) is pending, FOLD_SECONDS have
passed, or /metrics is scraped, they are binned: every number feature at once, in a few numpy
calls (`NumberBins`), then the other features one by one. The PSI gauges and the bin counters
are brought up to date on a scrape and at most once a second otherwise (a counter's increment
is a Python call, and there is one per bin). The window is the last `window` rows plus at most
one block: old rows leave it a block at a time.

Past `rows_per_second` rows offered a second (DRIFT_ROWS_PER_SECOND, per worker), the monitor
counts a sample: each request is counted at random with the share that keeps to that rate,
set once a second from the second before, so every row has the same chance and the window
stays a fair picture of the traffic. Binning costs ~0.2 us a row; counting every row of a
worker serving ~320,000 rows a second cost 11% of its throughput, and a PSI over a sample of
that traffic says what one over all of it does.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from modelstore import Metadata
from modelstore.metadata import FeatureProfile
from modelstore.profile import Binner, NumberBins, psi
from service.metrics import Metrics, multiprocess_dir
from service.runtimes.base import Table, kinds_of

BLOCKS: Final = 10
FOLD_SECONDS: Final = 1.0
# Below this many values of a feature in the window its PSI is mostly noise: NaN until then.
MIN_ROWS: Final = 100
# Which requests a sampling monitor counts: chance, not security (nothing depends on it).
_chance = random.Random()  # noqa: S311


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
    def __init__(
        self,
        metadata: Metadata,
        window: int,
        metrics: Metrics,
        rows_per_second: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if metadata.profile is None:
            raise ValueError("the version has no training profile")
        text = dict(kinds_of(metadata))
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
        # Requests arrive typed (see `Table.typed`): every non-text feature is a row of the
        # table's numbers block, in feature order. Number features are binned together, from
        # their rows of the pending blocks; booleans from theirs and text from its columns, one
        # feature at a time.
        self._kinds = kinds_of(metadata)
        block_row = {name: row for row, name in enumerate(n for n, t in self._kinds if not t)}
        profiles = list(metadata.profile)
        self._numbered = [i for i, p in enumerate(profiles) if p.edges is not None]
        numbered_rows = [block_row[profiles[i].name] for i in self._numbered]
        # Their rows of the block: all of it, without a copy, when there are no booleans.
        whole = numbered_rows == list(range(len(block_row)))
        self._numbered_rows: slice | list[int] = slice(None) if whole else numbered_rows
        self._numbers = NumberBins([p.edges for p in profiles if p.edges is not None])
        others = [i for i in range(len(self._features)) if i not in self._numbered]
        self._flags = [(i, block_row[profiles[i].name]) for i in others if not self._is_text(i)]
        self._texts = [i for i in others if self._is_text(i)]
        # Counted since the counters were last increased (see `_publish`).
        self._unpublished = np.zeros(self._shape, dtype=np.int64)
        self._unpublished_missing = np.zeros(len(self._features), dtype=np.int64)
        # Pending: each request's numbers block, and its column of each text feature (typed
        # arrays: numbers in them are no Python objects, so holding them costs the garbage
        # collector nothing).
        self._pending_blocks: list[np.ndarray[Any, Any]] = []
        self._pending_texts: list[list[Any]] = [[] for _ in self._texts]
        self._pending_rows = 0
        self._clock = clock
        self._last_fold = self._last_gauges = clock()
        # Sampling (see the module's docstring): the share of requests counted, from the rows
        # offered since `_second_started`.
        self._rows_per_second = rows_per_second
        self._share = 1.0
        self._share_gauge = metrics.drift_sampled_share
        self._share_gauge.set(1.0)
        self._offered = 0
        self._second_started = self._last_fold

    def _is_text(self, index: int) -> bool:
        return self._features[index].is_text

    def observe(self, table: Table) -> None:
        """The request path: remember the request's block and text columns (or, when
        sampling, skip them); bin them later, many requests at once."""
        now = self._clock()
        if self._rows_per_second:
            if now - self._second_started >= 1.0:
                self._new_share(now)
            self._offered += table.rows
            if self._share < 1.0 and _chance.random() >= self._share:
                return
        table = table.typed(self._kinds)
        self._pending_blocks.append(table.numbers)  # type: ignore[arg-type]
        for index, chunks in zip(self._texts, self._pending_texts, strict=True):
            chunks.append(table.column(self._features[index].name))
        self._pending_rows += table.rows
        if self._pending_rows >= self._block_rows or now - self._last_fold > FOLD_SECONDS:
            self.fold(gauges=False)

    def _new_share(self, now: float) -> None:
        """The share of requests to count until the next second: the budget over the rate of
        rows offered since the last share was set; after a whole second with no request, 1."""
        elapsed = now - self._second_started
        rate = self._offered / elapsed if elapsed < 2.0 else 0.0
        self._share = min(1.0, self._rows_per_second / rate) if rate else 1.0
        self._share_gauge.set(self._share)
        self._offered = 0
        self._second_started = now

    def fold(self, gauges: bool = True) -> None:
        """Bin what is pending. The PSI gauges are recomputed when asked (a scrape) and at
        most every FOLD_SECONDS otherwise: each worker's gauges must stay fresh for a scrape
        that another worker answers."""
        blocks, texts, rows = self._pending_blocks, self._pending_texts, self._pending_rows
        self._pending_blocks, self._pending_texts = [], [[] for _ in self._texts]
        self._pending_rows = 0
        now = self._last_fold = self._clock()
        if rows:
            self._count(blocks, texts, rows)
        if gauges or now - self._last_gauges > FOLD_SECONDS:
            self._last_gauges = now
            self._publish()
            self._update_gauges()

    def _count(self, blocks: list[np.ndarray[Any, Any]], texts: list[list[Any]], rows: int) -> None:
        counts = np.zeros(self._shape, dtype=np.int64)
        missing = np.zeros(len(self._features), dtype=np.int64)
        block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        if self._numbered:
            binned, gaps = self._numbers.count(block[self._numbered_rows])
            counts[self._numbered, : binned.shape[1]] = binned
            missing[self._numbered] = gaps
        for index, row in self._flags:
            binned_one, gap_count = self._features[index].binner.count(block[row])
            counts[index, : len(binned_one)] = binned_one
            missing[index] = gap_count
        for index, chunks in zip(self._texts, texts, strict=True):
            binned_one, gap_count = self._features[index].binner.count(np.concatenate(chunks))
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
