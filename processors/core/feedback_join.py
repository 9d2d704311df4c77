"""Feedback meets its call: a bounded, exactly-once join by request id inside one calls partition.

Feedback travels on the calls topic keyed like the call (by service), so a feedback record lands on the
partition, and the engine, that absorbed its call (docs/design.md, "Feedback and quality"). Both sides are
remembered for ``window_ms`` of event time:

- every call's request id (its ``event_id``, hashed to 64 bits), the source offset of its record, its time and
  its quality series, in join slots of ``slot_ms`` (``JoinSlot``), persisted append-only (``JoinLog``: a group of
  records writes the calls it added, not the slots they went into);
- feedback whose call has not arrived yet (out of order: another process, another SDK instance), in
  ``PendingFeedback``.

A feedback record joins calls from records *before* it (lower offset) and a calls record joins pending
feedback from records before it. Matching on offsets, not on what the state holds, makes a replay after a
crash decide exactly what the first pass decided even when state from later records was already persisted:
with offset stamps on every object (keyed_state.py) each join is counted once. Pending feedback is never
removed by a match, only by age (``2 * window_ms`` behind the newest event, so a replay within one group of
records still sees it); feedback older than the window when it arrives, or whose call never comes, expires
and is counted as ``expired``. Everything is numpy over the batch: ids are hashed as fixed-width UTF-32
columns, lookups are ``searchsorted`` over each slot's sorted hashes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.keyed_state import NEVER, OFFSET

KINDS: tuple[str, ...] = ("thumbs", "rating", "evaluator", "label")
THUMBS, RATING, EVALUATOR, LABEL = range(len(KINDS))
BINARY_KINDS = (THUMBS, LABEL)  # correct / incorrect: these give accuracy
_ID_CHARS = 64  # request ids are hashed on their first 64 characters
_FNV_OFFSET, _FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)
_HEAD = struct.Struct("<qi")
_JOIN_COLUMNS = (np.uint64, np.int64, np.int64, np.int32)  # JoinSlot: hashes, offsets, times, series codes


@dataclass(slots=True)
class FeedbackColumns:
    """N feedback events for one service as parallel arrays (schemas/feedback.v1.avsc)."""

    service: str
    request_id: np.ndarray  # object[str]
    timestamp_ms: np.ndarray  # int64
    kind: np.ndarray  # uint8 codes into KINDS
    value: np.ndarray  # float64 as sent: thumbs and label 1/0, rating 1..5, evaluator 0..1
    source: np.ndarray  # object[str]

    def __len__(self) -> int:
        return int(self.value.shape[0])

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(score in 0..1, binary mask): a 1-5 rating r scores (r - 1) / 4; thumbs and labels are binary."""
        value = self.value.astype(np.float64)
        score = np.where(self.kind == RATING, (value - 1.0) / 4.0, value)
        binary = np.isin(self.kind, BINARY_KINDS)
        return np.clip(score, 0.0, 1.0), binary


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a-style hashes of request ids, one numpy pass per character position (None hashes as "").

    An id is hashed as its first 64 characters padded with NULs; a NUL leaves the hash times the prime, so the
    positions past the longest id of the batch are one multiplication by a power of the prime."""
    text = np.asarray(ids, dtype=object)
    if text.size == 0:
        return np.zeros(0, dtype=np.uint64)
    text = np.where(text == None, "", text).astype(str)  # noqa: E711  (U<longest id>)
    longest = max(text.dtype.itemsize // 4, 1)
    chars = text.view(np.uint32).reshape(len(text), longest)[:, :_ID_CHARS].astype(np.uint64)
    h = np.full(len(text), _FNV_OFFSET, dtype=np.uint64)
    for j in range(chars.shape[1]):
        h ^= chars[:, j]
        h *= _FNV_PRIME
    if chars.shape[1] < _ID_CHARS:
        h *= np.uint64(pow(int(_FNV_PRIME), _ID_CHARS - chars.shape[1], 1 << 64))
    h ^= h >> np.uint64(29)
    return h


class _Filled:
    """One of a JoinSlot's columns (``_JOIN_COLUMNS`` order), as a view of its filled part."""

    def __init__(self, column: int) -> None:
        self.column = column

    def __get__(self, slot: JoinSlot, owner: type | None = None) -> np.ndarray:
        return slot._columns[self.column][: slot._n]


class JoinSlot:
    """Calls of one ``slot_ms`` of event time: hash, source offset, time and series code per call.

    The columns grow by doubling (a record appends in amortised time proportional to its own calls, not to the
    slot's); ``hashes``, ``offsets``, ``times`` and ``codes`` are views of the filled part."""

    __slots__ = ("_codes", "_columns", "_n", "_order", "series")

    def __init__(self) -> None:
        self._columns = [np.zeros(0, dtype=dtype) for dtype in _JOIN_COLUMNS]
        self._n = 0
        self.series: list[str] = []
        self._codes: dict[str, int] | None = None  # series -> its position in ``series`` (built when first needed)
        self._order: np.ndarray | None = None

    hashes, offsets, times, codes = (_Filled(column) for column in range(len(_JOIN_COLUMNS)))

    def __len__(self) -> int:
        return self._n

    def _append(self, *values: np.ndarray | int) -> None:
        """Append one value (array or scalar) per column, ``k`` rows (the first value's size)."""
        n, k = self._n, np.size(values[0])
        if n + k > self._columns[0].size:
            capacity = max(n + k, 2 * self._columns[0].size, 64)
            grown = [np.empty(capacity, dtype=dtype) for dtype in _JOIN_COLUMNS]
            for new, old in zip(grown, self._columns, strict=True):
                new[:n] = old[:n]
            self._columns = grown
        for column, value in zip(self._columns, values, strict=True):
            column[n : n + k] = value
        self._n = n + k
        self._order = None

    def add(self, hashes: np.ndarray, offset: int | np.ndarray, times: np.ndarray, series: list[str],
            codes: np.ndarray) -> None:
        """Append calls: their hashes, source offset (one, or one each), times and codes into ``series``."""
        known = self._codes
        if known is None or len(known) != len(self.series):
            known = self._codes = {s: i for i, s in enumerate(self.series)}
        names = self.series
        remap = np.empty(len(series), dtype=np.int32)
        for j, name in enumerate(series):  # the batch's series only: the slot's others are not looked at
            code = known.get(name)
            if code is None:
                code = known[name] = len(names)
                names.append(name)
            remap[j] = code
        self._append(hashes, offset, times, remap[codes] if remap.size else codes)

    def find(self, hashes: np.ndarray, before_offset: np.ndarray) -> np.ndarray:
        """Per wanted hash, the row of a call with that hash absorbed before ``before_offset``; -1 if none."""
        out = np.full(hashes.size, -1, dtype=np.int64)
        if not len(self) or not hashes.size:
            return out
        if self._order is None:
            self._order = np.argsort(self.hashes, kind="stable")
        ordered = self.hashes[self._order]
        at = np.searchsorted(ordered, hashes)
        inside = at < ordered.size
        hit = np.zeros(hashes.size, dtype=bool)
        hit[inside] = ordered[at[inside]] == hashes[inside]
        rows = np.where(hit, self._order[np.minimum(at, ordered.size - 1)], -1)
        ok = hit & (self.offsets[np.maximum(rows, 0)] < before_offset)
        out[ok] = rows[ok]
        return out

    def extend(self, other: JoinSlot) -> None:
        """Append ``other``'s calls (a part of this slot persisted apart), their codes renumbered into ours."""
        self.add(other.hashes, other.offsets, other.times, other.series, other.codes)

    def to_bytes(self, first: int = 0) -> bytes:
        """The calls from row ``first`` on, with the names of their series only (a slot of a fleet's calls holds
        thousands), numbered anew: ``from_bytes`` reads them as a slot of their own."""
        used, codes = np.unique(self.codes[first:], return_inverse=True)
        names = json.dumps([self.series[code] for code in used.tolist()], separators=(",", ":")).encode()
        return (_HEAD.pack(len(self) - first, len(names)) + names + self.hashes[first:].tobytes()
                + self.offsets[first:].tobytes() + self.times[first:].tobytes()
                + codes.astype(_JOIN_COLUMNS[3]).tobytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> JoinSlot:
        n, names = _HEAD.unpack_from(blob, 0)
        at = _HEAD.size
        slot = cls()
        slot.series = json.loads(blob[at:at + names])
        at += names
        columns = []
        for dtype, size in (("<u8", 8), ("<i8", 8), ("<i8", 8), ("<i4", 4)):
            columns.append(np.frombuffer(blob, dtype=dtype, count=n, offset=at))
            at += n * size
        slot._append(*columns)
        return slot


class JoinLog:
    """One partition's join slots by slot start, persisted append-only.

    A slot takes calls for ``slot_ms`` of event time, and late ones after. Written whole after every group of
    records, each call was written again with every later record of its slot: with a record a group (a worker
    below its top rate) ~0.7 MB a write, ~9 times the calls' own bytes. Each write now holds only the calls a slot
    gained since its last write, under ``<start>+<first row>``; a slot's writes are deleted together when it goes.
    Exactly once per slot: a record at or below the newest offset the slot absorbed is not added again. A slot's
    writes reach the broker in the order they were made (one producer, one changelog partition), so after a crash
    the persisted ones are its first rows, and a replay adds the rest under the same keys. Keys of the earlier
    layouts (``<start>`` whole, ``<start>.<part>`` by record range) are read as parts of their slot."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._slots: dict[int, JoinSlot] = {}
        self._applied: dict[int, int] = {}  # start -> the newest source offset the slot absorbed
        self._written: dict[int, int] = {}  # start -> rows persisted (written or restored): the next write's first
        self._keys: dict[int, list[str]] = {}  # start -> the keys its rows are persisted under
        self._dirty: set[int] = set()  # starts that gained calls since the last drain
        self._deleted: list[str] = []

    def for_update(self, start: int, offset: int) -> JoinSlot | None:
        """The slot to add the record at ``offset``'s calls to, or None when it absorbed that record already."""
        if self._applied.get(start, NEVER) >= offset:
            return None
        self._applied[start] = offset
        self._dirty.add(start)
        slot = self._slots.get(start)
        if slot is None:
            slot = self._slots[start] = JoinSlot()
        return slot

    def items(self) -> list[tuple[int, JoinSlot]]:
        return list(self._slots.items())

    def drop(self, start: int) -> None:
        """Forget the slot; every key it was persisted under is deleted at the next drain."""
        if self._slots.pop(start, None) is not None:
            self._applied.pop(start, None)
            self._written.pop(start, None)
            self._dirty.discard(start)
            self._deleted += self._keys.pop(start, [])

    def drain(self) -> Iterator[tuple[str, bytes | None]]:
        """(key, stamp || calls) for every slot's calls since its last write, then (key, None) for dropped ones."""
        for start in sorted(self._dirty):  # only the slots that gained calls, not every slot of the window
            slot, first = self._slots[start], self._written.get(start, 0)
            if len(slot) > first:
                key = f"{start}+{first}"
                self._keys.setdefault(start, []).append(key)
                self._written[start] = len(slot)
                yield key, OFFSET.pack(self._applied[start]) + slot.to_bytes(first)
        self._dirty.clear()
        deleted, self._deleted = self._deleted, []
        for key in deleted:
            yield key, None

    def restore(self, key: str, blob: bytes) -> None:
        """Add persisted calls to their slot (in any order: a slot's rows are a set to the join)."""
        start = int(key.partition("+")[0].partition(".")[0])
        (offset,) = OFFSET.unpack_from(blob, 0)
        part = JoinSlot.from_bytes(blob[OFFSET.size :])
        slot = self._slots.get(start)
        if slot is None:
            slot = self._slots[start] = JoinSlot()
        slot.extend(part)
        self._applied[start] = max(self._applied.get(start, NEVER), offset)
        self._written[start] = len(slot)
        self._keys.setdefault(start, []).append(key)


class PendingFeedback:
    """Feedback that arrived before its call: hash, offset, time, kind and value per event (bounded)."""

    __slots__ = ("expired", "hashes", "kinds", "offsets", "sources", "times", "values")

    def __init__(self) -> None:
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.offsets = np.zeros(0, dtype=np.int64)
        self.times = np.zeros(0, dtype=np.int64)
        self.kinds = np.zeros(0, dtype=np.uint8)
        self.values = np.zeros(0, dtype=np.float64)
        self.expired = 0  # never joined: their call was older than the window, or never came

    def __len__(self) -> int:
        return int(self.hashes.size)

    def add(self, hashes: np.ndarray, offset: int, feedback: FeedbackColumns, rows: np.ndarray) -> None:
        self.hashes = np.concatenate([self.hashes, hashes[rows]])
        self.offsets = np.concatenate([self.offsets, np.full(rows.size, offset, dtype=np.int64)])
        self.times = np.concatenate([self.times, feedback.timestamp_ms[rows].astype(np.int64)])
        self.kinds = np.concatenate([self.kinds, feedback.kind[rows].astype(np.uint8)])
        self.values = np.concatenate([self.values, feedback.value[rows].astype(np.float64)])

    def expire(self, oldest_ms: int, capacity: int) -> None:
        keep = self.times >= oldest_ms
        if keep.sum() > capacity:  # keep the newest ``capacity``
            keep &= self.times >= np.sort(self.times[keep])[-capacity]
        if not keep.all():
            self.expired += int((~keep).sum())
            for name in ("hashes", "offsets", "times", "kinds", "values"):
                setattr(self, name, getattr(self, name)[keep])

    def to_bytes(self) -> bytes:
        return (_HEAD.pack(len(self), self.expired) + self.hashes.tobytes() + self.offsets.tobytes()
                + self.times.tobytes() + self.kinds.tobytes() + self.values.tobytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> PendingFeedback:
        n, expired = _HEAD.unpack_from(blob, 0)
        out = cls()
        out.expired = expired
        at = _HEAD.size
        for name, dtype, size in (("hashes", "<u8", 8), ("offsets", "<i8", 8), ("times", "<i8", 8),
                                  ("kinds", "u1", 1), ("values", "<f8", 8)):
            setattr(out, name, np.frombuffer(blob, dtype=dtype, count=n, offset=at).copy())
            at += n * size
        return out


@dataclass(slots=True)
class Joined:
    """Feedback matched to calls: per match, the call's series key, its time, the score and whether binary."""

    series: np.ndarray  # object[str]
    call_ms: np.ndarray
    score: np.ndarray
    binary: np.ndarray

    @classmethod
    def empty(cls) -> Joined:
        return cls(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return int(self.series.size)

    @staticmethod
    def concat(parts: list[Joined]) -> Joined:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Joined.empty()
        return Joined(np.concatenate([p.series for p in parts]), np.concatenate([p.call_ms for p in parts]),
                      np.concatenate([p.score for p in parts]), np.concatenate([p.binary for p in parts]))
