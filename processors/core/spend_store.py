"""Spend storage for the budget ledger: per (bucket, scope) key tables on int64 arrays, the two buckets kept
per period, and their persistence one bucket at a time.

Tables. A table maps each key to a slot in parallel int64 arrays (spend, thresholds reported, last-charge
stamp), so a batch charges its keys with a few fancy-indexed adds instead of a dict entry per key. ``stamp``
orders keys by their last charge (smallest = least recently charged, the eviction order).

Persistence. Each bucket is its own store key ``<period>/<start_ms>``, stamped with the offset of the last
record that changed it (the scheme of keyed_state.py, per bucket): a drain rewrites only the buckets changed
since the previous one, a replayed record skips the buckets whose stamp already includes it and charges the
others, and a bucket rotated out becomes a tombstone. A bucket is encoded as a small JSON header and, per
scope, the key names (NUL-joined UTF-8; a JSON list if some name holds a NUL) and the live slots' arrays in
slot order, each in the narrowest integer type that holds it (stamps relative to the oldest).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from typing import Any

import numpy as np

from llmpulse.processors.core.keyed_state import NEVER, OFFSET

SCOPES: tuple[str, ...] = ("global", "service", "user", "model")
PERIODS: tuple[str, ...] = ("hour", "day", "month")  # the calendar periods budgets are set for
BURN_PERIOD = "minute"  # spend per minute, against a fraction of the hour limit: how fast a budget goes
TRACKED_PERIODS: tuple[str, ...] = (*PERIODS, BURN_PERIOD)
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# How far behind its newest bucket a period still opens one: a calendar period its previous bucket (a month back
# is at most 31 days), the burn minute the last ten. The fleet ledger hears partitions that do not keep pace with
# each other: one may be minutes of event time ahead (after a restart, or a backlog), and the buckets it opens
# must not crowd out the others' (their spend would go uncounted, and a runaway's burn unseen).
LATE_HORIZON_MS: dict[str, int] = {"hour": HOUR_MS, "day": DAY_MS, "month": 31 * DAY_MS, BURN_PERIOD: 10 * MINUTE_MS}
_LENGTH = struct.Struct("<I")
_UNUSED = np.iinfo(np.int64).max  # stamp of a free slot: sorts after every live key
_NARROW = ("<u1", "<u2", "<u4")


class SpendTable:
    """One scope's spend in one bucket; freed slots are reused."""

    __slots__ = ("_joined", "_joined_keys", "free", "index", "keys", "level", "spent", "stamp")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = []  # slot -> key; None for a free slot
        self.free: list[int] = []
        # The first ``_joined_keys`` keys NUL-joined as UTF-8, kept between writes while no slot is freed: keys are
        # only appended then, so a write encodes the new names, not every user's again (None: start over).
        self._joined: bytearray | None = None
        self._joined_keys = 0
        self.spent = np.zeros(8, dtype=np.int64)
        self.level = np.zeros(8, dtype=np.int64)  # thresholds already reported
        self.stamp = np.full(8, _UNUSED, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def slots(self, names: list[str]) -> np.ndarray:
        """The slot of each name (names are distinct), adding unknown ones with zero spend."""
        found = np.fromiter(map(self.index.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = np.flatnonzero(found < 0)
        if new.shape[0]:
            found[new] = self._add([names[i] for i in new.tolist()])
        return found

    def _add(self, names: list[str]) -> list[int]:
        reused = [self.free.pop() for _ in range(min(len(names), len(self.free)))]
        for slot, name in zip(reused, names, strict=False):
            self.keys[slot] = name
        if reused:
            self._joined = None
        first = len(self.keys)
        self.keys.extend(names[len(reused) :])
        slots = reused + list(range(first, len(self.keys)))
        if len(self.keys) > self.spent.shape[0]:  # grow by doubling: amortised O(1) per new key
            grow = max(len(self.keys), 2 * self.spent.shape[0]) - self.spent.shape[0]
            self.spent = np.concatenate([self.spent, np.zeros(grow, dtype=np.int64)])
            self.level = np.concatenate([self.level, np.zeros(grow, dtype=np.int64)])
            self.stamp = np.concatenate([self.stamp, np.full(grow, _UNUSED, dtype=np.int64)])
        self.index.update(zip(names, slots, strict=True))
        return slots

    def get(self, name: str) -> int:
        slot = self.index.get(name)
        return 0 if slot is None else int(self.spent[slot])

    def evict_oldest(self, count: int) -> None:
        """Forget the ``count`` least recently charged keys."""
        used = len(self.keys)
        victims = np.argpartition(self.stamp[:used], count - 1)[:count] if count < used else np.arange(used)
        self._joined = None
        for slot in victims.tolist():
            name = self.keys[slot]
            if name is not None:
                del self.index[name]
                self.keys[slot] = None
                self.free.append(slot)
        self.spent[victims], self.level[victims], self.stamp[victims] = 0, 0, _UNUSED

    def to_dict(self) -> dict[str, list[int]]:
        """``{key: [spent, reported thresholds]}`` least recently charged first (the whole-ledger JSON shape)."""
        order = np.argsort(self.stamp[: len(self.keys)], kind="stable")[: len(self.index)]
        pairs = np.stack([self.spent[order], self.level[order]], axis=1).tolist()  # nested lists built in C
        return dict(zip(map(self.keys.__getitem__, order.tolist()), pairs, strict=True))

    def top(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` keys that spent the most, with their spend, most first (of equal spend the least recently
        charged first, as ``to_dict`` lists them): a partition and a sort of the few that can make it, not of all."""
        if count <= 0:
            return []
        live = np.flatnonzero(self.stamp[: len(self.keys)] != _UNUSED)
        spent = self.spent[live]
        if live.shape[0] > count:
            at_least = np.partition(spent, live.shape[0] - count)[live.shape[0] - count]
            contenders = spent >= at_least
            live, spent = live[contenders], spent[contenders]
        chosen = live[np.lexsort((self.stamp[live], -spent))[:count]].tolist()
        return [(self.keys[slot], int(self.spent[slot])) for slot in chosen]  # type: ignore[misc]

    @classmethod
    def load(cls, entries: dict[str, list[int]], first_stamp: int) -> SpendTable:
        """From ``to_dict``'s shape, whose order is the charge order."""
        out, n = cls(), len(entries)
        out._add(list(entries))
        values = np.array(list(entries.values()), dtype=np.int64).reshape(n, 2)
        out.spent[:n], out.level[:n] = values[:, 0], values[:, 1]
        out.stamp[:n] = np.arange(first_stamp, first_stamp + n)
        return out

    def to_bytes(self) -> bytes:
        """Header, names, then spend, levels and relative stamps of the live slots in slot order (no sort)."""
        used = len(self.keys)
        live: slice | np.ndarray = slice(0, used)
        names: list[str] = self.keys  # type: ignore[assignment]  # no free slot: every entry is a name
        if self.free:
            live = np.flatnonzero(self.stamp[:used] != _UNUSED)
            names = [key for key in self.keys if key is not None]
            joined = _nul_joined(names)
        else:
            joined = self._joined_names()
        codec = "json" if joined is None else "nul"
        encoded = json.dumps(names).encode("utf-8") if joined is None else joined
        stamps = self.stamp[live]
        columns = [_narrow(self.spent[live]), _narrow(self.level[live]),
                   _narrow(stamps - stamps.min() if stamps.shape[0] else stamps)]
        header = {"n": len(names), "names": [codec, len(encoded)], "columns": [[d, len(b)] for d, b in columns]}
        return _framed(header, [encoded, *(b for _, b in columns)])

    def _joined_names(self) -> bytes | None:
        """Every key NUL-joined (no slot is free), the ones added since the last write appended to the kept join;
        None when a key holds a NUL (the names are then written as JSON)."""
        fresh = _nul_joined(self.keys[self._joined_keys :]) if self._joined is not None else None  # type: ignore[arg-type]
        if fresh is None:
            whole = _nul_joined(self.keys)  # type: ignore[arg-type]
            self._joined = None if whole is None else bytearray(whole)
            self._joined_keys = len(self.keys)
            return whole
        if fresh:
            self._joined += b"\x00" + fresh if self._joined_keys else fresh  # type: ignore[operator]
            self._joined_keys = len(self.keys)
        return bytes(self._joined)  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview, first_stamp: int) -> SpendTable:
        """``to_bytes``'s encoding; stamps are shifted to start at ``first_stamp``."""
        header, body = _unframe(blob)
        n, (codec, names_size) = header["n"], header["names"]
        sections = _split(body, [names_size, *(size for _, size in header["columns"])])
        text = bytes(sections[0]).decode("utf-8")
        names = json.loads(text) if codec == "json" else (text.split("\x00") if n else [])
        out = cls()
        out._add(names)
        spent, level, stamp = (np.frombuffer(section, dtype=dtype).astype(np.int64)
                               for section, (dtype, _) in zip(sections[1:], header["columns"], strict=True))
        out.spent[:n], out.level[:n], out.stamp[:n] = spent, level, stamp + first_stamp
        return out

    def newest_stamp(self) -> int:
        live = self.stamp[: len(self.keys)]
        live = live[live != _UNUSED]
        return int(live.max()) if live.shape[0] else NEVER


def _nul_joined(names: list[str]) -> bytes | None:
    """The names NUL-joined as UTF-8, or None when one of them holds a NUL itself."""
    text = "\x00".join(names)
    return text.encode("utf-8") if text.count("\x00") == max(len(names) - 1, 0) else None


@dataclass(slots=True, eq=False)
class Bucket:
    """One period bucket: a table per scope, the offset of the last record that changed it, and whether it
    is in the store (restored or written since), so rotating it out must leave a tombstone."""

    start_ms: int
    spend: dict[str, SpendTable] = field(default_factory=lambda: {s: SpendTable() for s in SCOPES})
    applied: int = NEVER
    stored: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The whole-ledger JSON shape: ``{"start_ms", "spend": {scope: SpendTable.to_dict()}}``."""
        return {"start_ms": self.start_ms, "spend": {scope: table.to_dict() for scope, table in self.spend.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], first_stamp: int) -> Bucket:
        out = cls(int(data["start_ms"]))
        for scope, entries in data["spend"].items():
            out.spend[scope] = SpendTable.load(entries, first_stamp)
            first_stamp += len(entries)
        return out

    def to_bytes(self) -> bytes:
        tables = [(scope, table.to_bytes()) for scope, table in self.spend.items() if len(table)]
        header = {"v": 1, "start_ms": self.start_ms, "scopes": [[scope, len(blob)] for scope, blob in tables]}
        return _framed(header, [blob for _, blob in tables])

    @classmethod
    def from_bytes(cls, blob: bytes | memoryview, first_stamp: int) -> Bucket:
        header, body = _unframe(blob)
        out = cls(int(header["start_ms"]))
        sections = _split(body, [size for _, size in header["scopes"]])
        for (scope, _), section in zip(header["scopes"], sections, strict=True):
            out.spend[scope] = SpendTable.from_bytes(section, first_stamp)  # stamps compare within a table only
        return out


class BucketRing:
    """Per period the buckets within ``LATE_HORIZON_MS`` of the newest (the previous and the current hour, day
    or month; the last ten minutes), the charge-stamp counter, and what changed since the last drain. Offsets
    are those of source records; ``None`` (a ledger nobody persists per bucket, e.g. the fleet's) charges every
    bucket and tracks nothing."""

    def __init__(self) -> None:
        self.periods: dict[str, list[Bucket]] = {p: [] for p in TRACKED_PERIODS}  # oldest first
        self.stamp = 0  # charge counter: the LRU order of keys
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()

    def find(self, period: str, start: int) -> Bucket | None:
        return next((b for b in self.periods[period] if b.start_ms == start), None)

    def bucket(self, period: str, start: int) -> Bucket | None:
        """The bucket for ``start``, rotating forward when it is new; None when it is too old to keep."""
        kept = self.periods[period]
        found = self.find(period, start)
        if found is not None:
            return found
        if kept and start < kept[-1].start_ms - LATE_HORIZON_MS[period]:
            return None  # older than what we keep
        bucket = Bucket(start)
        kept.append(bucket)
        self._trim(period)
        return bucket

    def _trim(self, period: str) -> None:
        """Sort the period's buckets and forget those beyond its horizon, keeping at least the newest two."""
        kept = self.periods[period]
        kept.sort(key=lambda b: b.start_ms)
        oldest_kept = kept[-1].start_ms - LATE_HORIZON_MS[period]
        gone = min(sum(b.start_ms < oldest_kept for b in kept), len(kept) - 2)
        if gone > 0:
            self._forget(period, kept[:gone])
            del kept[:gone]

    def admit(self, period: str, bucket: Bucket, offset: int | None) -> bool:
        """May the record at ``offset`` charge ``bucket``? If so the bucket is stamped and will be written."""
        if offset is None:
            return True
        if bucket.applied >= offset:
            return False  # a replayed record this bucket's persisted state already includes
        self._changed(period, bucket, offset)
        return True

    def _changed(self, period: str, bucket: Bucket, offset: int | None) -> None:
        if offset is not None:
            bucket.applied, bucket.stored = max(bucket.applied, offset), True
            self._dirty.add(f"{period}/{bucket.start_ms}")

    def next_stamps(self, count: int) -> np.ndarray:
        out = np.arange(self.stamp, self.stamp + count)
        self.stamp += count
        return out

    def evict(self, period: str, cap: int, offset: int | None) -> None:
        """Keep at most ``cap`` keys per scope over the period's buckets, previous-bucket keys going first."""
        for scope in SCOPES:
            buckets = self.periods[period]  # previous first
            excess = sum(len(bucket.spend[scope]) for bucket in buckets) - cap
            for bucket in buckets:
                if excess <= 0:
                    break
                count = min(excess, len(bucket.spend[scope]))
                if count:
                    bucket.spend[scope].evict_oldest(count)
                    self._changed(period, bucket, offset)
                    excess -= count

    def _forget(self, period: str, gone: list[Bucket]) -> None:
        for bucket in gone:
            key = f"{period}/{bucket.start_ms}"
            self._dirty.discard(key)
            if bucket.stored:
                self._deleted.add(key)

    # -- persistence -----------------------------------------------------------------------------------------

    def unwritten(self) -> bool:
        """Does ``drain`` have anything to write?"""
        return bool(self._dirty or self._deleted)

    def drain(self) -> Iterator[tuple[str, bytes | None]]:
        """(key, offset || bucket) for every changed bucket, then (key, None) for every one rotated out."""
        for key in sorted(self._dirty):
            period, _, start = key.partition("/")
            bucket = self.find(period, int(start))
            if bucket is not None:
                yield key, OFFSET.pack(bucket.applied) + bucket.to_bytes()
        yield from ((key, None) for key in sorted(self._deleted))
        self._dirty.clear()
        self._deleted.clear()

    def restore(self, key: str, blob: bytes) -> None:
        """Load one persisted bucket (``drain``'s key and blob)."""
        period, _, _start = key.partition("/")
        if period not in self.periods:
            raise KeyError(f"not a budget bucket key: {key!r}")
        (offset,) = OFFSET.unpack_from(blob, 0)
        self.place(period, self.loaded(memoryview(blob)[OFFSET.size :]), offset, rewrite=False)

    def loaded(self, data: dict[str, Any] | memoryview) -> Bucket:
        """A persisted bucket (``Bucket.to_dict`` or ``to_bytes``), its keys charged after every key so far."""
        bucket = Bucket.from_dict(data, self.stamp) if isinstance(data, dict) else Bucket.from_bytes(data, self.stamp)
        self.stamp = max(self.stamp, *(table.newest_stamp() + 1 for table in bucket.spend.values()))
        return bucket

    def place(self, period: str, bucket: Bucket, offset: int, rewrite: bool) -> None:
        """Put a restored bucket stamped ``offset`` in place. Restores arrive in any order: of two versions
        of a bucket the later stamp wins, and of more buckets than the period keeps (a crash between a new bucket
        and the tombstone of the one it rotated out) the newest stay. ``rewrite``: write it at the next drain."""
        bucket.applied, bucket.stored = offset, True
        kept = self.periods[period]
        same = self.find(period, bucket.start_ms)
        if same is not None:
            if same.applied >= offset:
                return
            kept.remove(same)
        kept.append(bucket)
        self._trim(period)
        if rewrite and any(b is bucket for b in kept):
            self._dirty.add(f"{period}/{bucket.start_ms}")


@dataclass(slots=True)
class Charge:
    """One scope's calls in one bucket, summed per key: rows (into the batch), their codes, and per key
    present in those rows its code, name and summed cost."""

    rows: np.ndarray
    codes: np.ndarray
    present: np.ndarray
    names: list[str]
    sums: np.ndarray


def group_keys(column: np.ndarray, skip_none: bool = False) -> tuple[np.ndarray, list[str]]:
    """Per-row key code and each code's key name; with ``skip_none`` None rows get code -1 (calls without a
    user are charged to no user key)."""
    values, n = column.tolist(), column.shape[0]
    if values.count(values[0]) == len(values):  # one key (global; a record is one service): no hashing
        keys, codes = values[:1], np.zeros(n, dtype=np.int64)
    else:  # hash-based, the per-row work inside C builtins (np.unique would sort Python objects)
        keys = list(dict.fromkeys(values))
        index = dict(zip(keys, range(len(keys)), strict=True))
        codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=n)
    names = list(map(str, keys))
    skipped = next((i for i, key in enumerate(keys) if key is None), None) if skip_none and None in keys else None
    if skipped is not None:
        codes = np.where(codes == skipped, -1, codes)
        if names[:skipped] + names[skipped + 1 :] == keys[:skipped] + keys[skipped + 1 :]:
            return codes, names
    elif names == keys:  # all keys are str (the identity check is cheap): names are distinct
        return codes, names
    # Some key is not a str: distinct values that print alike (e.g. 1 and "1") share one key.
    merged: dict[str, int] = {}
    remap = np.array([-1 if i == skipped else merged.setdefault(name, len(merged)) for i, name in enumerate(names)],
                     dtype=np.int64)
    return np.where(codes < 0, -1, remap[codes]), list(merged)


def aggregate(codes: np.ndarray, names: list[str], rows: np.ndarray | None, cost: np.ndarray) -> Charge:
    """Sum the cost of ``rows`` (None: all) per key, skipping code -1."""
    row_idx = np.flatnonzero(codes >= 0 if rows is None else rows & (codes >= 0))
    row_codes = codes[row_idx]
    if len(names) == 1:  # global: one exact integer sum, no grouping
        present = np.zeros(1 if row_idx.shape[0] else 0, dtype=np.int64)
        sums = np.array([int(cost[row_idx].sum())] if row_idx.shape[0] else [], dtype=np.int64)
    else:
        present = np.flatnonzero(np.bincount(row_codes, minlength=len(names)))
        sums = _sum_by_code(row_codes, cost[row_idx], len(names))[present]
    return Charge(row_idx, row_codes, present, [names[i] for i in present.tolist()], sums)


def _sum_by_code(codes: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Exact int64 sums of non-negative values per code, without sorting.

    bincount adds in float64, exact while every partial sum stays below 2**53 micro-dollars ($9e9), which one
    batch never reaches; the rare batch that could is summed with integer np.add.at instead.
    """
    if values.shape[0] == 0 or int(values.max()) * values.shape[0] < 2**53:
        return np.rint(np.bincount(codes, weights=values, minlength=size)).astype(np.int64)
    sums = np.zeros(size, dtype=np.int64)
    np.add.at(sums, codes, values)
    return sums


def bucket_starts(timestamp_ms: np.ndarray, period: str) -> np.ndarray:
    """UTC start (Unix ms) of the minute/hour/day/month each timestamp falls in, vectorised."""
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    if period == BURN_PERIOD:
        return ts - ts % MINUTE_MS
    if period == "hour":
        return ts - ts % HOUR_MS
    if period == "day":
        return ts - ts % DAY_MS
    months = ts.astype("datetime64[ms]").astype("datetime64[M]")
    return months.astype("datetime64[ms]").astype(np.int64)


def _narrow(values: np.ndarray) -> tuple[str, bytes]:
    """The values in the narrowest unsigned type that holds them (int64 if negative or wider)."""
    if values.shape[0] and int(values.min()) >= 0:
        top = int(values.max())
        dtype = next((d for d in _NARROW if top <= np.iinfo(d).max), "<i8")
    else:
        dtype = "<u1" if not values.shape[0] else "<i8"
    return dtype, values.astype(dtype).tobytes()


def _framed(header: dict[str, object], sections: list[bytes]) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_LENGTH.pack(len(head)), head, *sections])


def _unframe(blob: bytes | memoryview) -> tuple[dict, memoryview]:  # type: ignore[type-arg]
    """``_framed``'s header and the bytes after it."""
    view = memoryview(blob)
    (size,) = _LENGTH.unpack_from(view, 0)
    return json.loads(bytes(view[_LENGTH.size : _LENGTH.size + size])), view[_LENGTH.size + size :]


def _split(body: memoryview, sizes: list[int]) -> list[memoryview]:
    bounds = np.cumsum([0, *sizes]).tolist()
    return [body[lo:hi] for lo, hi in pairwise(bounds)]
