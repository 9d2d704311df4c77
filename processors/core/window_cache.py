"""Per-series figures of a sliding window, kept until the series' slots or the slots inside the window change.

The timer asks every series' windows every few seconds (rules for quiet series, gauges), and most series did not
change since they were last asked: at 10,000 series that asking was ~a quarter of a worker's time. A figure of a
window (its quantiles, its totals) depends only on the slots inside it, and those change only when the series
does (a slot updated, restored, folded or deleted: ``SlotSeries.changed_since``) or when time moves a slot out
of the window or one stamped ahead of now into it (``SlotSeries.window_span`` tells when). Until then a kept row
is exactly what computing it again would give.

Rows are indexed by the engine's series codes (``SeriesIndex``), which are reused once a series is gone: each
row remembers the series it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from llmpulse.processors.core.slots import SlotSeries

# compute(series) -> (a row per series, the slot of time each row holds until)
Compute = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


class WindowCache:
    """Rows of ``width`` figures per series code, each valid from the slot of time it was computed at until the
    slot ``compute`` said, as long as its series does not change."""

    def __init__(self, width: int, dtype: type = np.float64) -> None:
        self.width = width
        self._rows = np.zeros((0, width), dtype=dtype)
        self._marks = np.zeros(0, dtype=np.int64)  # SlotSeries.mark() taken just before the row was computed
        self._since = np.zeros(0, dtype=np.int64)
        self._until = np.zeros(0, dtype=np.int64)  # 0: no row
        self._owners: list[str | None] = []

    def rows(self, slots: SlotSeries[Any], series: Sequence[str], codes: np.ndarray, now_slot: int,
             compute: Compute) -> np.ndarray:
        """A row per series (distinct keys; ``codes`` their series codes): kept ones where still valid, the
        others computed (one ``compute`` call for all of them) and kept."""
        if not len(series):
            return np.zeros((0, self.width), dtype=self._rows.dtype)
        self._grow(int(codes.max()) + 1)
        owners = self._owners
        valid = (self._since[codes] <= now_slot) & (now_slot < self._until[codes])
        kept = np.flatnonzero(valid)  # still in time: does the row hold this series, unchanged since?
        if kept.size:
            keys = [series[i] for i in kept.tolist()]
            at = codes[kept]
            valid[kept] = ~slots.changed_since(keys, self._marks[at]) & np.fromiter(
                (owners[code] == key for code, key in zip(at.tolist(), keys, strict=True)), dtype=bool,
                count=kept.size)
        missing = np.flatnonzero(~valid)
        if missing.size:
            mark = slots.mark()
            keys = [series[i] for i in missing.tolist()]
            rows, until = compute(keys)
            at = codes[missing]
            self._rows[at] = rows
            self._marks[at] = mark
            self._since[at] = now_slot
            self._until[at] = until
            for code, key in zip(at.tolist(), keys, strict=True):
                owners[code] = key
        return self._rows[codes]

    def _grow(self, size: int) -> None:
        have = self._until.size
        if size <= have:
            return
        size = max(size, 2 * have, 64)
        self._rows = np.concatenate((self._rows, np.zeros((size - have, self.width), dtype=self._rows.dtype)))
        self._marks = np.concatenate((self._marks, np.zeros(size - have, dtype=np.int64)))
        self._since = np.concatenate((self._since, np.zeros(size - have, dtype=np.int64)))
        self._until = np.concatenate((self._until, np.zeros(size - have, dtype=np.int64)))
        self._owners += [None] * (size - have)
