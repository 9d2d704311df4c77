"""Per-series state cut into time slots and persisted slot by slot.

A sliding window (1 m, 5 m, 1 h) is the merge of a series' slots inside it. Persisting each slot under its
own key means a batch rewrites only the one or two slots it touched (a sketch of ~1-2 KB), never the whole
hour; slots older than the horizon are deleted, so state is bounded by series x horizon / interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic

import numpy as np

from llmpulse.processors.core.keyed_state import KeyedState, T

SEP = "\x1f"


def series_key(parts: tuple[str | None, ...]) -> str:
    return SEP.join("" if p is None else p for p in parts)


def series_parts(key: str) -> tuple[str, ...]:
    return tuple(key.split(SEP))


class SlotSeries(Generic[T]):
    """State per (series, slot); keys in the store are ``<series>@<slot>``."""

    def __init__(
        self,
        namespace: str,
        interval_s: int,
        horizon_s: int,
        create: Callable[[], T],
        load: Callable[[bytes], T],
    ) -> None:
        self.interval_ms = interval_s * 1000
        self.horizon_slots = max(1, horizon_s // interval_s)
        self.state: KeyedState[T] = KeyedState(namespace, lambda _key: create(), load)
        self._by_series: dict[str, dict[int, T]] = {}
        self.dropped_late = 0

    def slots_of(self, timestamps_ms: np.ndarray) -> np.ndarray:
        return timestamps_ms // self.interval_ms

    def for_update(self, series: str, slot: int, offset: int, now_ms: int) -> T | None:
        """The slot's state to update, or None when the record was applied already or the slot expired."""
        if slot <= now_ms // self.interval_ms - self.horizon_slots:
            self.dropped_late += 1
            return None
        key = f"{series}@{slot}"
        item = self.state.for_update(key, offset)
        if item is not None:
            self._by_series.setdefault(series, {})[slot] = item
        return item

    def restore(self, key: str, blob: bytes) -> None:
        self.state.restore(key, blob)
        series, _, slot = key.rpartition("@")
        item = self.state.get(key)
        if item is not None:
            self._by_series.setdefault(series, {})[int(slot)] = item

    def window(self, series: str, window_s: int, now_ms: int) -> list[T]:
        """The slots of ``series`` covering the last ``window_s`` seconds up to ``now_ms``."""
        slots = self._by_series.get(series, {})
        newest = now_ms // self.interval_ms
        oldest = newest - window_s * 1000 // self.interval_ms
        if newest - oldest < len(slots):  # a short window of a long history: look its slots up
            return [item for item in map(slots.get, range(oldest + 1, newest + 1)) if item is not None]
        return [item for slot, item in slots.items() if oldest < slot <= newest]

    def series(self) -> list[str]:
        return list(self._by_series)

    def evict(self, now_ms: int) -> int:
        """Delete slots beyond the horizon (and series left empty); returns how many slots went."""
        cutoff = now_ms // self.interval_ms - self.horizon_slots
        removed = 0
        for series, slots in list(self._by_series.items()):
            for slot in [s for s in slots if s <= cutoff]:
                del slots[slot]
                self.state.delete(f"{series}@{slot}")
                removed += 1
            if not slots:
                del self._by_series[series]
        return removed
