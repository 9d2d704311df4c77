"""Per-series state cut into time slots and persisted slot by slot.

A sliding window (1 m, 5 m, 1 h) is the merge of a series' slots inside it. Persisting each slot under its
own key means a batch rewrites only the one or two slots it touched (a sketch of ~1-2 KB), never the whole
hour; slots older than the horizon are deleted, so state is bounded by series x horizon / interval.

Folding: a slot more than ``exact_s`` behind its series' newest slot is merged, with its neighbours, into one
slot of ``fold_s`` (keys ``<series>@<first slot>+<slots>``). A sparse series then keeps a few dozen slots instead
of one per interval of the hour, each with its own key, offset stamp and header: the persisted state per series
is a fraction. Windows ending at a series' newest call and no longer than ``exact_s`` never reach a folded slot,
so they are exactly what they were; a window that does (the 1 h one, a record far behind its series' newest
call) counts a folded slot whole when any part of it is inside, so its far edge moves out by up to ``fold_s``.
A folded slot expires when all of it is beyond the horizon, and a late call for a folded slot goes into it, so
every call the horizon accepts is still counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic

import numpy as np

from llmpulse.processors.core.keyed_state import KeyedState, T

SEP = "\x1f"
_NONE = -(1 << 62)  # before every slot
_FAR = 1 << 62  # after every slot


def series_key(parts: tuple[str | None, ...]) -> str:
    return SEP.join("" if p is None else p for p in parts)


def series_parts(key: str) -> tuple[str, ...]:
    return tuple(key.split(SEP))


class SlotSeries(Generic[T]):
    """State per (series, slot); keys in the store are ``<series>@<slot>``, and ``<series>@<first>+<slots>`` for a
    folded slot (module docstring; folding needs ``merge``)."""

    def __init__(
        self,
        namespace: str,
        interval_s: int,
        horizon_s: int,
        create: Callable[[], T],
        load: Callable[[bytes], T],
        merge: Callable[[T, T], None] | None = None,
        exact_s: int = 0,
        fold_s: int = 0,
    ) -> None:
        self.interval_ms = interval_s * 1000
        self.horizon_slots = max(1, horizon_s // interval_s)
        self.state: KeyedState[T] = KeyedState(namespace, lambda _key: create(), load)
        self._by_series: dict[str, dict[int, T]] = {}  # every series with slots; its slots not folded
        self._folded: dict[str, dict[int, tuple[int, T]]] = {}  # series -> first slot -> (last slot, state)
        self._folded_to: dict[str, int] = {}  # series -> the last slot its folded slots cover
        self._merge = merge
        self.exact_slots = -(-exact_s // interval_s)
        span = fold_s // interval_s if merge is not None else 0
        self.fold_slots = span if span > 1 and self.exact_slots + span < self.horizon_slots else 0  # 0: no folding
        self.dropped_late = 0
        # Change stamps, for callers that keep what they derived from a series' slots (``window_span``): each
        # series' stamp of its last change (a slot handed out for update, restored, folded or deleted), and the
        # newest slot it holds (a slot ahead of now enters windows as time passes).
        self._stamp = 0
        self._changed: dict[str, int] = {}
        self._newest: dict[str, int] = {}

    def slots_of(self, timestamps_ms: np.ndarray) -> np.ndarray:
        return timestamps_ms // self.interval_ms

    def for_update(self, series: str, slot: int, offset: int, now_ms: int) -> T | None:
        """The slot's state to update, or None when the record was applied already or the slot expired."""
        if slot <= now_ms // self.interval_ms - self.horizon_slots:
            self.dropped_late += 1
            return None
        if slot <= self._folded_to.get(series, _NONE):  # a late call: into the folded slot holding its slot
            covering = self._covering(series, slot)
            if covering is not None:
                first, last = covering
                self._touch(series)
                return self.state.for_update(f"{series}@{first}+{last - first + 1}", offset)
        key = f"{series}@{slot}"
        item = self.state.for_update(key, offset)
        if item is not None:
            self._by_series.setdefault(series, {})[slot] = item
            self._touch(series)
            if slot > self._newest.get(series, _NONE):
                self._newest[series] = slot
        return item

    def restore(self, key: str, blob: bytes) -> None:
        """Load a persisted slot. A slot inside a folded one was folded already (its tombstone never made it, see
        KeyedState.fold): it is dropped, and deleted again."""
        self.state.restore(key, blob)
        series, _, slot = key.rpartition("@")
        item = self.state.get(key)
        if item is None:
            return
        slots = self._by_series.setdefault(series, {})
        self._touch(series)
        first_text, folded, span_text = slot.partition("+")
        if folded:
            first = int(first_text)
            last = first + int(span_text) - 1
            self._folded.setdefault(series, {})[first] = (last, item)
            self._folded_to[series] = max(self._folded_to.get(series, _NONE), last)
            for inside in [s for s in slots if first <= s <= last]:
                del slots[inside]
                self.state.delete(f"{series}@{inside}")
        elif self._covering(series, int(slot)) is not None:
            self.state.delete(key)
        else:
            slots[int(slot)] = item
            self._newest[series] = max(self._newest.get(series, _NONE), int(slot))

    def window(self, series: str, window_s: int, now_ms: int) -> list[T]:
        """The slots of ``series`` covering the last ``window_s`` seconds up to ``now_ms`` (folded ones that
        reach into them included)."""
        return self.window_span(series, window_s, now_ms)[0]

    def window_span(self, series: str, window_s: int, now_ms: int) -> tuple[list[T], int]:
        """``window``'s slots, and the first slot of time (``now_ms // interval``) at which they change unless the
        series does (``changed_since``): when the oldest of them leaves the window, or a slot ahead of now enters."""
        slots = self._by_series.get(series, {})
        newest = now_ms // self.interval_ms
        width = window_s * 1000 // self.interval_ms
        oldest = newest - width
        until = newest + 1 if self._newest.get(series, _NONE) > newest else _FAR
        if width < len(slots):  # a short window of a long history: look its slots up, oldest first
            parts = []
            for slot in range(oldest + 1, newest + 1):
                item = slots.get(slot)
                if item is not None:
                    if not parts:
                        until = min(until, slot + width)
                    parts.append(item)
        else:
            inside = [slot for slot in slots if oldest < slot <= newest]
            parts = [slots[slot] for slot in inside]
            if inside:
                until = min(until, min(inside) + width)
        if self._folded_to.get(series, _NONE) > oldest:
            for first, (last, item) in self._folded[series].items():
                if last > oldest and first <= newest:
                    parts.append(item)
                    until = min(until, last + width)
                elif first > newest:  # (ahead of now: only when the clock went back since it was folded)
                    until = min(until, first)
        return parts, until

    def mark(self) -> int:
        """A stamp later than every change so far and earlier than every later one (see ``changed_since``)."""
        self._stamp += 1
        return self._stamp

    def changed_since(self, series: Sequence[str], marks: np.ndarray) -> np.ndarray:
        """Per series, whether it changed after its ``marks`` entry (``mark``), or holds nothing (never marked)."""
        changed = self._changed.get
        return np.fromiter((changed(key, _FAR) for key in series), dtype=np.int64, count=len(series)) > marks

    def _touch(self, series: str) -> None:
        self._stamp += 1
        self._changed[series] = self._stamp

    def series(self) -> list[str]:
        return list(self._by_series)

    def evict(self, now_ms: int) -> int:
        """Delete slots beyond the horizon (and series left empty) and fold the slots far enough behind their
        series' newest one; returns how many slots expired."""
        now_slot = now_ms // self.interval_ms
        cutoff = now_slot - self.horizon_slots
        removed = 0
        span = self.fold_slots
        for series, slots in list(self._by_series.items()):
            if slots:  # (min and max of the keys first: most ticks leave a series as it was)
                oldest = min(slots)
                if oldest <= cutoff:
                    for slot in [s for s in slots if s <= cutoff]:
                        del slots[slot]
                        self.state.delete(f"{series}@{slot}")
                        removed += 1
                    self._touch(series)
                # fold every slot whose whole fold lies exact_slots behind the newest (or behind now, for a series
                # with calls stamped in the future)
                if span and slots:
                    boundary = (min(max(slots), now_slot) - self.exact_slots + 1) // span * span
                    if min(slots) < boundary:
                        self._fold(series, slots, sorted(s for s in slots if s < boundary))
                        self._touch(series)
            folded = self._folded.get(series)
            if folded and folded[min(folded)][0] <= cutoff:  # folds never overlap: the first ends first
                for first in [first for first, (last, _item) in folded.items() if last <= cutoff]:
                    last, _item = folded.pop(first)
                    self.state.delete(f"{series}@{first}+{last - first + 1}")
                    removed += 1
                self._touch(series)
                if not folded:
                    del self._folded[series], self._folded_to[series]
            if not slots and series not in self._folded:
                del self._by_series[series]
                self._changed.pop(series, None)
                self._newest.pop(series, None)
        return removed

    def _fold(self, series: str, slots: dict[int, T], due: list[int]) -> None:
        assert self._merge is not None
        folded = self._folded.setdefault(series, {})
        for slot in due:
            first, last = self._covering(series, slot) or self._new_fold(folded, slot)
            item = self.state.fold(f"{series}@{slot}", f"{series}@{first}+{last - first + 1}", self._merge)
            folded[first] = (last, item)
            del slots[slot]
            self._folded_to[series] = max(self._folded_to.get(series, _NONE), last)

    def _covering(self, series: str, slot: int) -> tuple[int, int] | None:
        """(first, last) slot of the folded slot of ``series`` holding ``slot``, if any."""
        folded = self._folded.get(series)
        if not folded:
            return None
        if self.fold_slots:
            first = slot - slot % self.fold_slots
            entry = folded.get(first)
            if entry is not None and entry[0] >= slot:
                return first, entry[0]
        for first, (last, _item) in folded.items():
            if first <= slot <= last:
                return first, last
        return None

    def _new_fold(self, folded: dict[int, tuple[int, T]], slot: int) -> tuple[int, int]:
        """The aligned fold holding ``slot``, narrowed to stay clear of folded slots of another span (restored
        from a run with other settings)."""
        first = slot - slot % self.fold_slots
        last = first + self.fold_slots - 1
        for other_first, (other_last, _item) in folded.items():
            if other_last < slot:
                first = max(first, other_last + 1)
            elif other_first > slot:
                last = min(last, other_first - 1)
        return first, last
