"""Sliding time windows over a ring of fixed intervals: latency sketches and integer counters.

Time is cut into slots of ``interval_s`` (slot = timestamp_ms // interval_ms). A ring of
``longest window / interval`` slots holds one sketch (or one row of counters) per slot, so memory is bounded
whatever the traffic. A window of W seconds at time ``now_ms`` is the slot holding ``now_ms`` plus the
W / interval - 1 slots before it: it covers between W - interval and W seconds of history.

Event time rules: the ring's head is the newest slot ever accepted. Events older than the ring's horizon
(slot <= head - ring length) are dropped and counted in ``dropped_late``; when the caller passes its wall
clock ``now_ms``, events more than ``future_tolerance_s`` ahead of it are counted in ``rejected_future`` and
ignored, so one bad producer clock cannot wipe the ring.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from llmpulse.processors.core.sketch import (
    DEFAULT_MAX_BUCKETS,
    DEFAULT_RELATIVE_ACCURACY,
    LatencySketch,
    SketchState,
    decode_bucket_counts,
    decode_counts,
    encode_bucket_counts,
    encode_counts,
)

DEFAULT_COUNTER_COLUMNS: tuple[str, ...] = (
    "requests", "errors", "timeouts", "rate_limited", "cache_hits", "no_answer",
)
_EMPTY_SLOT = np.iinfo(np.int64).min
_NO_HEAD = _EMPTY_SLOT // 2  # far above _EMPTY_SLOT so "head - ring length" never overflows int64
_RING = struct.Struct("<4sIIqqqH")  # magic, interval s, tolerance s, head, dropped, rejected, n windows
_SKETCHES = struct.Struct("<dIdI")  # accuracy, max buckets, min indexable, live slots
_MAGIC_SKETCHES = b"SWS1"
_MAGIC_COUNTERS = b"SWC1"


@dataclass(frozen=True, slots=True)
class RingSpec:
    """Slot width, the windows to answer, and how far ahead of the wall clock an event may be."""

    interval_s: int = 10
    windows_s: tuple[int, ...] = (60, 300, 3600)
    future_tolerance_s: int = 30

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or not self.windows_s:
            raise ValueError("interval_s must be positive and windows_s non-empty")
        if any(w <= 0 or w % self.interval_s for w in self.windows_s):
            raise ValueError("every window must be a positive multiple of interval_s")

    @property
    def interval_ms(self) -> int:
        return self.interval_s * 1000

    @property
    def ring_length(self) -> int:
        return max(self.windows_s) // self.interval_s


class _SlotRing:
    """Which ring position holds which slot, plus the head and the late/future tallies."""

    __slots__ = ("dropped_late", "head", "rejected_future", "slot_ids", "spec")

    def __init__(self, spec: RingSpec) -> None:
        self.spec = spec
        self.slot_ids = np.full(spec.ring_length, _EMPTY_SLOT, dtype=np.int64)
        self.head = int(_NO_HEAD)
        self.dropped_late = 0
        self.rejected_future = 0

    def accept(self, timestamps_ms: np.ndarray, now_ms: int | None) -> _Accepted:
        """Which events to keep and their slots, updating the head and the late/future tallies."""
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        slots = ts // self.spec.interval_ms
        keep: np.ndarray | None = None  # None: every event (the common case, no mask to build or apply)
        if now_ms is not None:
            future = ts > now_ms + self.spec.future_tolerance_s * 1000
            n_future = int(np.count_nonzero(future))
            if n_future:
                self.rejected_future += n_future
                keep = ~future
                slots = slots[keep]
        if slots.size == 0:
            return _Accepted(keep, slots, 0, -1)
        lo, hi = int(slots.min()), int(slots.max())
        self.head = max(self.head, hi)
        floor = self.head - self.spec.ring_length
        if lo > floor:
            return _Accepted(keep, slots, lo, hi)
        recent = slots > floor
        self.dropped_late += int(slots.size - np.count_nonzero(recent))
        if keep is None:
            keep = recent
        else:
            keep[keep] = recent
        slots = slots[recent]
        lo = int(slots.min()) if slots.size else 0
        return _Accepted(keep, slots, lo, hi if slots.size else -1)

    def claim(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ring positions for distinct ``slots``, and which of them held an older slot (to be reset)."""
        positions = slots % self.spec.ring_length
        stale = self.slot_ids[positions] != slots
        self.slot_ids[positions] = slots
        return positions, stale

    def claim_one(self, slot: int) -> tuple[int, bool]:
        position = slot % self.spec.ring_length
        stale = bool(self.slot_ids[position] != slot)
        self.slot_ids[position] = slot
        return position, stale

    def in_window(self, window_s: int, now_ms: int) -> np.ndarray:
        if window_s % self.spec.interval_s or not 0 < window_s <= max(self.spec.windows_s):
            raise ValueError(f"window {window_s}s is not a multiple of the interval within the ring")
        now_slot = now_ms // self.spec.interval_ms
        first = now_slot - window_s // self.spec.interval_s
        return np.flatnonzero((self.slot_ids > first) & (self.slot_ids <= now_slot))

    def live(self) -> np.ndarray:
        """Positions still inside the horizon, in slot order."""
        alive = np.flatnonzero(self.slot_ids > self.head - self.spec.ring_length)
        return alive[np.argsort(self.slot_ids[alive])]

    def to_bytes(self, magic: bytes) -> bytes:
        s = self.spec
        header = _RING.pack(
            magic, s.interval_s, s.future_tolerance_s, self.head, self.dropped_late, self.rejected_future,
            len(s.windows_s),
        )
        return header + np.asarray(s.windows_s, dtype="<u4").tobytes()

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, magic: bytes) -> tuple[_SlotRing, int]:
        found, interval, tolerance, head, dropped, rejected, n = _RING.unpack_from(buf, 0)
        if found != magic:
            raise ValueError("bytes were not written by this window class")
        windows = np.frombuffer(buf, dtype="<u4", count=n, offset=_RING.size)
        ring = cls(RingSpec(interval, tuple(int(w) for w in windows), tolerance))
        ring.head, ring.dropped_late, ring.rejected_future = head, dropped, rejected
        return ring, _RING.size + 4 * n


class _Accepted(NamedTuple):
    keep: np.ndarray | None  # mask over the batch, None when every event was kept
    slots: np.ndarray  # slot of each kept event
    lo: int  # smallest and largest kept slot (lo > hi when none)
    hi: int


def _groups(accepted: _Accepted) -> Iterator[tuple[int, slice | np.ndarray]]:
    """(slot, its events among the kept ones); a batch usually fits one slot, so that path copies nothing."""
    if accepted.lo == accepted.hi:
        yield accepted.lo, slice(None)
        return
    if accepted.lo > accepted.hi:
        return
    order = np.argsort(accepted.slots, kind="stable")
    distinct, starts = np.unique(accepted.slots[order], return_index=True)
    yield from zip((int(s) for s in distinct), np.split(order, starts[1:]), strict=True)


class SlidingWindowSketches:
    """Latency quantiles over recent windows (default 1 m, 5 m, 1 h) from a ring of per-slot sketches."""

    __slots__ = ("_accuracy", "_max_buckets", "_min_indexable", "_ring", "_sketches")

    def __init__(
        self,
        spec: RingSpec | None = None,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        min_indexable: float | None = None,
    ) -> None:
        self._ring = _SlotRing(spec or RingSpec())
        self._accuracy = relative_accuracy
        self._max_buckets = max_buckets
        self._min_indexable = LatencySketch(relative_accuracy, max_buckets, min_indexable).min_indexable
        self._sketches: list[LatencySketch | None] = [None] * self._ring.spec.ring_length

    @property
    def spec(self) -> RingSpec:
        return self._ring.spec

    @property
    def dropped_late(self) -> int:
        return self._ring.dropped_late

    @property
    def rejected_future(self) -> int:
        return self._ring.rejected_future

    def _new_sketch(self) -> LatencySketch:
        return LatencySketch(self._accuracy, self._max_buckets, self._min_indexable)

    def add_many(self, timestamps_ms: np.ndarray, values: np.ndarray, now_ms: int | None = None) -> int:
        """Add (timestamp, value) pairs; returns how many events were inside the ring and kept."""
        accepted = self._ring.accept(timestamps_ms, now_ms)
        kept = np.asarray(values, dtype=np.float64)
        if accepted.keep is not None:
            kept = kept[accepted.keep]
        for slot, idx in _groups(accepted):
            pos, stale = self._ring.claim_one(slot)
            sketch = self._sketches[pos]
            if sketch is None:
                sketch = self._sketches[pos] = self._new_sketch()
            elif stale:
                sketch.clear()
            sketch.add_many(kept[idx])
        return int(accepted.slots.size)

    def window_sketch(self, window_s: int, now_ms: int) -> LatencySketch:
        """One sketch merging every slot in the window (empty when nothing fell in it)."""
        parts = [s for p in self._ring.in_window(window_s, now_ms) if (s := self._sketches[p]) is not None]
        return LatencySketch.merge_all(parts) if parts else self._new_sketch()

    def quantiles(self, window_s: int, qs: Sequence[float] | np.ndarray, now_ms: int) -> np.ndarray:
        return self.window_sketch(window_s, now_ms).quantiles(qs)

    def count(self, window_s: int, now_ms: int) -> int:
        sketches = (self._sketches[p] for p in self._ring.in_window(window_s, now_ms))
        return sum(s.count for s in sketches if s is not None)

    def to_bytes(self) -> bytes:
        """Ring header, sketch configuration, then every live slot's data as columns.

        Columnar so the cost is a handful of numpy calls whatever the number of slots: slot offsets from the
        head, zero counts, lowest keys, bucket spans, (sum, min, max) as float64, and all bucket counters
        concatenated (bitmap of non-zero buckets + values, see encode_bucket_counts).
        """
        slots, states = [], []
        for pos in self._ring.live():
            sketch = self._sketches[pos]
            if sketch is not None and sketch.count:
                slots.append(int(self._ring.slot_ids[pos]))
                states.append(sketch.export_state())
        config = _SKETCHES.pack(self._accuracy, self._max_buckets, self._min_indexable, len(states))
        parts = [self._ring.to_bytes(_MAGIC_SKETCHES), config]
        if states:
            lo_keys = np.array([st.lo_key for st in states], dtype=np.int64)
            base = int(lo_keys.min())
            parts += [
                encode_counts(self._ring.head - np.array(slots, dtype=np.int64)),
                encode_counts(np.array([st.zero_count for st in states], dtype=np.int64)),
                struct.pack("<q", base),
                encode_counts(lo_keys - base),
                encode_counts(np.array([st.counts.size for st in states], dtype=np.int64)),
                np.array([(st.sum, st.min, st.max) for st in states], dtype="<f8").tobytes(),
                encode_bucket_counts(np.concatenate([st.counts for st in states])),
            ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview) -> SlidingWindowSketches:
        try:
            ring, offset = _SlotRing.from_bytes(buf, _MAGIC_SKETCHES)
            accuracy, max_buckets, min_indexable, n_live = _SKETCHES.unpack_from(buf, offset)
            out = cls(ring.spec, accuracy, max_buckets, min_indexable)
            out._ring = ring
            if n_live == 0:
                return out
            offset += _SKETCHES.size
            behind, offset = decode_counts(buf, offset)
            zeros, offset = decode_counts(buf, offset)
            (base,) = struct.unpack_from("<q", buf, offset)
            lo_keys, offset = decode_counts(buf, offset + 8)
            spans, offset = decode_counts(buf, offset)
            totals = np.frombuffer(buf, dtype="<f8", count=3 * n_live, offset=offset).reshape(n_live, 3)
            counts, _ = decode_bucket_counts(buf, offset + 24 * n_live)
        except struct.error as exc:
            raise ValueError("truncated window bytes") from exc
        if not behind.size == zeros.size == lo_keys.size == spans.size == n_live:
            raise ValueError("window columns disagree on the number of slots")
        per_slot = np.split(counts, np.cumsum(spans)[:-1])
        for i in range(n_live):
            slot = ring.head - int(behind[i])
            pos = slot % ring.spec.ring_length
            sketch = out._sketches[pos] = out._new_sketch()
            total, low, high = totals[i]
            lo_key = base + int(lo_keys[i])
            sketch.import_state(SketchState(int(zeros[i]), lo_key, per_slot[i], total, low, high))
            ring.slot_ids[pos] = slot
        return out


class SlidingCounters:
    """Named integer counters (requests, errors, ...) summed over sliding windows from a ring of slots."""

    __slots__ = ("_columns", "_counts", "_index", "_ring")

    def __init__(
        self, columns: Sequence[str] = DEFAULT_COUNTER_COLUMNS, spec: RingSpec | None = None
    ) -> None:
        if not columns or len(set(columns)) != len(columns):
            raise ValueError("columns must be non-empty and distinct")
        self._columns = tuple(columns)
        self._index = {name: i for i, name in enumerate(self._columns)}
        self._ring = _SlotRing(spec or RingSpec())
        self._counts = np.zeros((self._ring.spec.ring_length, len(self._columns)), dtype=np.int64)

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    @property
    def spec(self) -> RingSpec:
        return self._ring.spec

    @property
    def dropped_late(self) -> int:
        return self._ring.dropped_late

    @property
    def rejected_future(self) -> int:
        return self._ring.rejected_future

    def add_many(self, timestamps_ms: np.ndarray, now_ms: int | None = None, **columns: np.ndarray) -> int:
        """Add per-event increments (bool/int arrays aligned with ``timestamps_ms``); absent columns add 0."""
        unknown = set(columns) - set(self._index)
        if unknown:
            raise ValueError(f"unknown counter columns: {sorted(unknown)}")
        accepted = self._ring.accept(timestamps_ms, now_ms)
        if accepted.slots.size == 0:
            return 0
        kept = {name: np.asarray(v) if accepted.keep is None else np.asarray(v)[accepted.keep]
                for name, v in columns.items()}
        if accepted.lo == accepted.hi:  # one slot: plain column sums, no grouping
            pos, stale = self._ring.claim_one(accepted.lo)
            if stale:
                self._counts[pos] = 0
            for name, v in kept.items():
                self._counts[pos, self._index[name]] += int(v.sum())
            return int(accepted.slots.size)
        distinct, inverse = np.unique(accepted.slots, return_inverse=True)
        positions, stale = self._ring.claim(distinct)
        self._counts[positions[stale]] = 0
        for name, v in kept.items():
            # Float weights are exact for per-slot sums below 2^53.
            sums = np.bincount(inverse, weights=v, minlength=distinct.size)
            self._counts[positions, self._index[name]] += np.rint(sums).astype(np.int64)
        return int(accepted.slots.size)

    def totals(self, window_s: int, now_ms: int) -> dict[str, int]:
        summed = self._counts[self._ring.in_window(window_s, now_ms)].sum(axis=0)
        return {name: int(v) for name, v in zip(self._columns, summed, strict=True)}

    def to_bytes(self) -> bytes:
        """Ring header, column names, then live slot ids and their counter rows."""
        live = self._ring.live()
        names = "\x1f".join(self._columns).encode()
        return b"".join((
            self._ring.to_bytes(_MAGIC_COUNTERS),
            struct.pack("<H", len(names)), names,
            encode_counts(self._ring.head - self._ring.slot_ids[live]),  # small non-negative offsets
            encode_counts(self._counts[live]),
        ))

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview) -> SlidingCounters:
        try:
            ring, offset = _SlotRing.from_bytes(buf, _MAGIC_COUNTERS)
            (n_names,) = struct.unpack_from("<H", buf, offset)
            offset += 2
            names = bytes(buf[offset : offset + n_names]).decode().split("\x1f")
            out = cls(names, ring.spec)
            relative, offset = decode_counts(buf, offset + n_names)
            rows, _ = decode_counts(buf, offset)
        except struct.error as exc:
            raise ValueError("truncated counter bytes") from exc
        slots = ring.head - relative
        positions = slots % ring.spec.ring_length
        ring.slot_ids[positions] = slots
        out._counts[positions] = rows.reshape(slots.size, len(names))
        out._ring = ring
        return out
