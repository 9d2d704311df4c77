"""Relative-error quantile sketch for latencies (the DDSketch construction, written for numpy batches).

Accuracy promise: for any q in [0, 1], ``quantile(q)`` is within ``relative_accuracy`` (default 1 %) of the
exact order statistic of rank ``floor(q * (count - 1))``, i.e. ``np.quantile(x, q, method="lower")``, for
every positive value the store still holds at full resolution. Memory is bounded by ``max_buckets`` counters;
when a batch would need more, the lowest buckets fold into the lowest kept one, so only the smallest values
lose accuracy (2,048 buckets at 1 % span a ratio of about 10^17 between the smallest and largest value).

Three parts, as in DDSketch:

* ``LogMapping``: value <-> bucket key. A value v lands in bucket ``k = ceil(log_gamma(v))`` with
  ``gamma = (1 + a) / (1 - a)``, so ``gamma^(k-1) < v <= gamma^k``; the bucket reports ``2 gamma^k / (gamma + 1)``,
  within ``a`` of both bounds. Values ``<= min_indexable`` (zero, negatives, subnormals) are not indexable.
* ``BucketStore``: dense counters for a contiguous key range, at most ``max_buckets`` of them.
* ``LatencySketch``: a mapping and a store, plus a zero bucket for non-indexable values (reported as 0) and
  exact count, sum, min and max. NaN and infinities are ignored. Units are whatever the caller passes.

Bytes (``to_bytes``/``from_bytes``): a version byte and a form byte, the configuration only when it is not the
default, then the least that rebuilds the sketch exactly: nothing (empty), the value itself (one value), the minimum
and maximum (two values), else the totals and the store's counters in the compact form of counter_bytes.py. Most
slots of a sparse series hold one or two values: 10 or 18 bytes instead of ~80. Version 3 writes the full form's
counts and lowest key as varints and its counters with ``pack_counts`` (a slot folded from five minutes of a
sparse series' calls: ~47 bytes instead of ~84); a sketch of more than ``_VARINTS_UP_TO`` values, or one asked for
``fixed_width``, is still written in version 2's full form. Version 2 and the first format (a ``LSK1`` header with
the configuration and the totals) are read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from llmpulse.processors.core.counter_bytes import (
    decode_bucket_counts,
    encode_bucket_counts,
    pack_counts,
    read_varint,
    unpack_counts,
    unzigzag,
    varint,
    zigzag,
)

DEFAULT_RELATIVE_ACCURACY = 0.01
DEFAULT_MAX_BUCKETS = 2048

_CONFIG = struct.Struct("<4sdId")  # first format: magic, relative accuracy, max buckets, min indexable
_TOTALS = struct.Struct("<qqddd")  # zero count, lowest key, sum, min, max
_MAGIC = b"LSK1"
_VERSION = 3  # first byte of the compact format (the first format starts with b"L")
_FIXED_WIDTH = 2  # the version whose full form had fixed-width totals and counter_bytes.encode_bucket_counts
_VARINTS_UP_TO = 256  # values; a bigger sketch (a busy series' slot) keeps version 2's full form
_EXTREMES = struct.Struct("<ddd")  # the full form's sum, min and max (after its varint zero count and lowest key)
_EMPTY, _ONE, _TWO, _FULL = range(4)  # forms (the low bits of the second byte)
_CUSTOM = 4  # flag in the form byte: _SETTINGS follow (not the default configuration)
_SETTINGS = struct.Struct("<dId")  # relative accuracy, max buckets, min indexable
_VALUES = (struct.Struct("<d"), struct.Struct("<dd"))  # the one value; the minimum and maximum
_FLOAT = struct.Struct("<d")


@dataclass(frozen=True, slots=True)
class LogMapping:
    """Logarithmic value <-> key mapping with relative accuracy ``relative_accuracy``."""

    relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY
    min_indexable: float = 0.0  # raised to the smallest normal double times gamma, below which keys lose accuracy
    gamma: float = field(init=False)
    _multiplier: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be in (0, 1)")
        gamma = (1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy)
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "_multiplier", 1.0 / math.log(gamma))
        tiny = float(np.finfo(np.float64).tiny) * gamma
        object.__setattr__(self, "min_indexable", max(float(self.min_indexable), tiny))

    def keys_of(self, values: np.ndarray) -> np.ndarray:
        """Bucket keys of indexable values (``> min_indexable``)."""
        return np.ceil(np.log(values) * self._multiplier).astype(np.int64)

    def values_of(self, keys: np.ndarray) -> np.ndarray:
        """The value each bucket reports: within ``relative_accuracy`` of every value it holds."""
        return np.exp(keys * (1.0 / self._multiplier)) * (2.0 / (1.0 + self.gamma))


@lru_cache(maxsize=32)
def _mapping(relative_accuracy: float, min_indexable: float) -> LogMapping:
    """One (frozen) mapping per configuration, shared by every sketch built with it (a sketch per slot)."""
    return LogMapping(relative_accuracy, min_indexable)


class BucketStore:
    """Counters for keys ``lo .. lo + len(counts) - 1``; past ``max_buckets`` the lowest keys fold together."""

    __slots__ = ("counts", "lo", "max_buckets")

    def __init__(self, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be positive")
        self.max_buckets = int(max_buckets)
        self.counts = np.zeros(0, dtype=np.int64)
        self.lo = 0  # key of counts[0]

    def add_keys(self, keys: np.ndarray) -> None:
        lo, hi = int(keys.min()), int(keys.max())
        if self.counts.size:
            hi = max(hi, self.lo + self.counts.size - 1)
        floor = hi - self.max_buckets + 1
        if lo < floor:  # collapse before counting so the temporary array stays bounded too
            keys = np.maximum(keys, floor)
            lo = floor
        self.add_counts(lo, np.bincount(keys - lo))

    def add_counts(self, lo: int, counts: np.ndarray) -> None:
        """Add counters for keys lo .. lo + len - 1, growing and collapsing the store as needed."""
        hi = lo + counts.size - 1
        if not self.counts.size and counts.size <= self.max_buckets:  # an empty store takes them as they are
            self.counts, self.lo = np.array(counts, dtype=np.int64), lo
            return
        cur_hi = self.lo + self.counts.size - 1
        if self.counts.size and lo >= self.lo and hi <= cur_hi:
            self.counts[lo - self.lo : hi - self.lo + 1] += counts
            return
        new_lo, new_hi = (min(lo, self.lo), max(hi, cur_hi)) if self.counts.size else (lo, hi)
        new_lo = max(new_lo, new_hi - self.max_buckets + 1)
        grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        _fold_into(grown, new_lo, self.counts, self.lo)
        _fold_into(grown, new_lo, counts, lo)
        self.counts, self.lo = grown, new_lo

    def set_counts(self, lo: int, counts: np.ndarray) -> None:
        """Replace the counters, trimmed to their non-zero ends (growth assumes them)."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.size > self.max_buckets:
            raise ValueError("state has more buckets than max_buckets")
        nz = np.flatnonzero(counts)
        self.counts = counts[nz[0] : nz[-1] + 1].copy() if nz.size else counts[:0].copy()
        self.lo = int(lo) + (int(nz[0]) if nz.size else 0)

    @classmethod
    def union(cls, stores: Sequence[BucketStore], max_buckets: int) -> BucketStore:
        """One store holding every store's counters (one allocation, however many inputs)."""
        out = cls(max_buckets)
        full = [s for s in stores if s.counts.size]
        if full:
            hi = max(s.lo + s.counts.size - 1 for s in full)
            lo = max(min(s.lo for s in full), hi - max_buckets + 1)
            out.counts, out.lo = np.zeros(hi - lo + 1, dtype=np.int64), lo
            for s in full:
                _fold_into(out.counts, lo, s.counts, s.lo)
        return out


def _fold_into(dst: np.ndarray, dst_lo: int, src: np.ndarray, src_lo: int) -> None:
    """Add ``src`` (keys from src_lo) into ``dst`` (keys from dst_lo); keys below dst_lo go to dst[0]."""
    if src.size == 0:
        return
    below = dst_lo - src_lo
    if below > 0:
        dst[0] += src[:below].sum()
        src, src_lo = src[below:], dst_lo
    start = src_lo - dst_lo
    dst[start : start + src.size] += src


class LatencySketch:
    """Mergeable quantile sketch: a ``LogMapping`` over a ``BucketStore`` (see module docstring)."""

    __slots__ = ("_count", "_max", "_min", "_sum", "_zero_count", "mapping", "store")

    def __init__(
        self,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        min_indexable: float | None = None,
    ) -> None:
        self.mapping = _mapping(relative_accuracy, 0.0 if min_indexable is None else min_indexable)
        self.store = BucketStore(max_buckets)
        self._empty_totals()

    def clear(self) -> None:
        self.store = BucketStore(self.store.max_buckets)
        self._empty_totals()

    def _empty_totals(self) -> None:
        self._zero_count = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def relative_accuracy(self) -> float:
        return self.mapping.relative_accuracy

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> float:
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        return self._max if self._count else math.nan

    @property
    def num_buckets(self) -> int:
        return int(self.store.counts.size)

    def __repr__(self) -> str:
        return f"LatencySketch(count={self._count}, buckets={self.num_buckets}, accuracy={self.relative_accuracy})"

    # ----------------------------------------------------------------- adding and merging
    def add_many(self, values: np.ndarray) -> None:
        """Add a batch; NaN and infinities are skipped."""
        v = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(v)
        if not finite.all():
            v = v[finite]
        if v.size == 0:
            return
        indexable = v > self.mapping.min_indexable
        n_indexable = int(np.count_nonzero(indexable))
        keys = self.mapping.keys_of(v if n_indexable == v.size else v[indexable])
        self.add_summarized(int(v.size), float(v.sum()), float(v.min()), float(v.max()), int(v.size) - n_indexable,
                            keys)

    def add_summarized(self, count: int, total: float, low: float, high: float, zero_count: int,
                       keys: np.ndarray) -> None:
        """What ``add_many`` does with a non-empty batch of finite values, given their count, sum, minimum and
        maximum, how many are not indexable and the keys of the others: for callers that compute these for many
        batches at once (``LatencyMonitor.update``)."""
        self._add_totals(count, total, low, high)
        self._zero_count += zero_count
        if keys.size:
            self.store.add_keys(keys)

    def _add_totals(self, count: int, total: float, low: float, high: float) -> None:
        self._count += count
        self._sum += total
        self._min, self._max = min(self._min, low), max(self._max, high)

    def _check_compatible(self, other: LatencySketch) -> None:
        if other.mapping != self.mapping:
            raise ValueError("cannot merge sketches with different accuracy or min_indexable")

    def merge(self, other: LatencySketch) -> None:
        """Fold ``other`` into this sketch, as if its values had been added here."""
        self._check_compatible(other)
        if other._count == 0:
            return
        self._add_totals(other._count, other._sum, other._min, other._max)
        self._zero_count += other._zero_count
        if other.store.counts.size:
            self.store.add_counts(other.store.lo, other.store.counts)

    @classmethod
    def merge_all(cls, sketches: Sequence[LatencySketch]) -> LatencySketch:
        """A new sketch holding the union of ``sketches``."""
        if not sketches:
            raise ValueError("merge_all needs at least one sketch")
        out = sketches[0]._empty_like()
        for s in sketches:
            out._check_compatible(s)
            if s._count:
                out._add_totals(s._count, s._sum, s._min, s._max)
                out._zero_count += s._zero_count
        out.store = BucketStore.union([s.store for s in sketches], out.store.max_buckets)
        return out

    def _empty_like(self) -> LatencySketch:
        return LatencySketch(self.mapping.relative_accuracy, self.store.max_buckets, self.mapping.min_indexable)

    def copy(self) -> LatencySketch:
        out = self._empty_like()
        out.merge(self)
        return out

    # ----------------------------------------------------------------- querying
    def quantiles(self, qs: Sequence[float] | np.ndarray) -> np.ndarray:
        """Estimates for each q in ``qs`` (NaN when empty or q outside [0, 1])."""
        q = np.asarray(qs, dtype=np.float64)
        out = np.full(q.shape, np.nan)
        valid = (q >= 0.0) & (q <= 1.0)
        if self._count == 0 or not valid.any():
            return out
        counts = self.store.counts
        ranks = q[valid] * (self._count - 1)
        cumulative = np.cumsum(counts) + self._zero_count
        # First bucket whose cumulative count exceeds the rank holds the order statistic floor(rank).
        idx = np.minimum(np.searchsorted(cumulative, ranks, side="right"), max(counts.size - 1, 0))
        estimate = np.where(ranks < self._zero_count, 0.0, self.mapping.values_of(self.store.lo + idx))
        # The extremes are tracked exactly: report them for q = 0 and 1, and never estimate beyond them.
        estimate = np.clip(estimate, self._min, self._max)
        estimate[q[valid] == 0.0] = self._min
        estimate[q[valid] == 1.0] = self._max
        out[valid] = estimate
        return out

    def quantile(self, q: float) -> float:
        return float(self.quantiles(np.array([q]))[0])

    # ----------------------------------------------------------------- bytes
    def to_bytes(self, fixed_width: bool = False) -> bytes:
        """The compact format (module docstring); ``fixed_width``: a full form in version 2's fixed widths, a few
        bytes more but faster to write (a day's sketch, rewritten on every record of its service)."""
        m, store = self.mapping, self.store
        custom = m != _DEFAULT_MAPPING or store.max_buckets != DEFAULT_MAX_BUCKETS
        settings = _SETTINGS.pack(m.relative_accuracy, store.max_buckets, m.min_indexable) if custom else b""
        if self._count == 0 and self._zero_count == 0 and not store.counts.size and self._sum == 0.0:
            form, body = _EMPTY, b""
        elif (values := self._few_values()) is not None:
            form, body = (_ONE, _VALUES[0].pack(*values)) if len(values) == 1 else (_TWO, _VALUES[1].pack(*values))
        elif self._count <= _VARINTS_UP_TO and not fixed_width:
            form = _FULL
            body = (varint(self._zero_count) + varint(zigzag(store.lo))
                    + _EXTREMES.pack(self._sum, self._min, self._max) + pack_counts(store.counts))
        else:  # counts past a byte: fixed widths are as small, and faster to write than varints
            body = _TOTALS.pack(self._zero_count, store.lo, self._sum, self._min, self._max) + encode_bucket_counts(
                store.counts)
            return bytes((_FIXED_WIDTH, _FULL | (_CUSTOM if custom else 0))) + settings + body
        return bytes((_VERSION, form | (_CUSTOM if custom else 0))) + settings + body

    def _few_values(self) -> tuple[float, ...] | None:
        """The sketch's one or two values when adding them to an empty sketch rebuilds exactly this state (then
        they are all its bytes need); None otherwise (more values, merged sums that differ in the last bit...).
        Judged in plain Python: most slot sketches of a sparse series come here."""
        if self._count not in (1, 2):
            return None
        values = (self._min,) if self._count == 1 else (self._min, self._max)
        total = self._min if self._count == 1 else self._min + self._max  # as add_many totals them
        if _FLOAT.pack(0.0 + total) != _FLOAT.pack(self._sum):
            return None
        indexable = [v for v in values if v > self.mapping.min_indexable]
        if self._zero_count != self._count - len(indexable):
            return None
        counts = self.store.counts
        if not indexable:
            return values if not counts.size else None
        keys = self.mapping.keys_of(np.array(indexable)).tolist()
        lo = min(keys)
        expected = [0] * (max(keys) - lo + 1)
        for key in keys:
            expected[key - lo] += 1
        if self.store.lo != lo or counts.size != len(expected) or counts.tolist() != expected:
            return None
        return values

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview) -> LatencySketch:
        if bytes(buf[:4]) == _MAGIC:
            return cls._from_first_format(buf)
        try:
            version, form = buf[0], buf[1]
            if version not in (_VERSION, _FIXED_WIDTH) or form & ~_CUSTOM > _FULL:
                raise ValueError("not a LatencySketch serialization")
            at = 2
            if form & _CUSTOM:
                sketch = cls(*_SETTINGS.unpack_from(buf, at))
                at += _SETTINGS.size
            else:
                sketch = cls()
            form &= ~_CUSTOM
            if form in (_ONE, _TWO):
                sketch.add_many(np.array(_VALUES[form - _ONE].unpack_from(buf, at)))
            elif form == _FULL and version == _FIXED_WIDTH:
                zero_count, lo, total, low, high = _TOTALS.unpack_from(buf, at)
                counts, _end = decode_bucket_counts(buf, at + _TOTALS.size)
                sketch._restore(zero_count, lo, counts, total, low, high)
            elif form == _FULL:
                zero_count, at = read_varint(buf, at)
                lo, at = read_varint(buf, at)
                total, low, high = _EXTREMES.unpack_from(buf, at)
                counts, _end = unpack_counts(buf, at + _EXTREMES.size)
                sketch._restore(zero_count, unzigzag(lo), counts, total, low, high)
        except (struct.error, IndexError) as exc:
            raise ValueError("truncated sketch bytes") from exc
        return sketch

    @classmethod
    def _from_first_format(cls, buf: bytes | memoryview) -> LatencySketch:
        try:
            _magic, accuracy, max_buckets, min_indexable = _CONFIG.unpack_from(buf, 0)
            zero_count, lo, total, low, high = _TOTALS.unpack_from(buf, _CONFIG.size)
            counts, _end = decode_bucket_counts(buf, _CONFIG.size + _TOTALS.size)
        except struct.error as exc:
            raise ValueError("truncated sketch bytes") from exc
        sketch = cls(accuracy, max_buckets, min_indexable)
        sketch._restore(zero_count, lo, counts, total, low, high)
        return sketch

    def _restore(self, zero_count: int, lo: int, counts: np.ndarray, total: float, low: float, high: float) -> None:
        self.store.set_counts(lo, counts)
        self._zero_count = int(zero_count)
        self._count = self._zero_count + int(self.store.counts.sum())
        self._sum, self._min, self._max = float(total), float(low), float(high)


def add_groups(sketches: Sequence[LatencySketch | None], values: np.ndarray, starts: np.ndarray) -> None:
    """``sketches[g].add_many(values[starts[g]:starts[g + 1]])`` for every group g (the last one runs to the end;
    groups are not empty; a None sketch is left out), with the bucket keys, extremes and counts of every group
    computed at once: a group of finite values then costs one ``add_summarized``, not a dozen numpy calls, and an
    empty sketch (a new slot: most of them at many series) takes its counters from one bincount over all such
    groups. Keys are those of the first sketch's mapping (a monitor's sketches share one); a sketch of another one
    (restored from a run with other settings) takes ``add_many``."""
    live = [g for g, sketch in enumerate(sketches) if sketch is not None]
    if not live:
        return
    mapping = sketches[live[0]].mapping  # type: ignore[union-attr]
    edges = [*starts.tolist(), values.size]
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    indexable = values > mapping.min_indexable
    if not all_finite:
        indexable &= finite  # (a group holding infinities or NaN is left to add_many below)
    bucket = np.zeros(values.size, dtype=np.int64)
    bucket[indexable] = mapping.keys_of(values[indexable])
    clean = values if all_finite else np.where(finite, values, 0.0)
    low = np.minimum.reduceat(clean, starts).tolist()
    high = np.maximum.reduceat(clean, starts).tolist()
    indexed = np.add.reduceat(indexable, starts).tolist()
    fast = [True] * len(edges) if all_finite else (np.add.reduceat(finite, starts) == np.diff(edges)).tolist()
    fresh = []  # groups of empty sketches, all of whose values are indexable: counted together below
    for g in live:
        sketch = sketches[g]
        lo, hi = edges[g], edges[g + 1]
        if not fast[g] or sketch.mapping is not mapping:  # type: ignore[union-attr]
            sketch.add_many(values[lo:hi])  # type: ignore[union-attr]
            continue
        size = hi - lo
        total = float(values[lo:hi].sum())  # (ndarray.sum's order of additions: reduceat's differs in the last bit)
        zeros = size - indexed[g]
        if not zeros and not sketch._count and not sketch.store.counts.size:  # type: ignore[union-attr]
            sketch._add_totals(size, total, low[g], high[g])  # type: ignore[union-attr]
            fresh.append(g)
            continue
        sketch.add_summarized(size, total, low[g], high[g], zeros,  # type: ignore[union-attr]
                              bucket[lo:hi] if not zeros else bucket[lo:hi][indexable[lo:hi]])
    if fresh:
        _count_fresh([sketches[g].store for g in fresh], bucket, starts[fresh],  # type: ignore[union-attr]
                     np.asarray(edges)[np.asarray(fresh) + 1])


def _count_fresh(stores: list[BucketStore], keys: np.ndarray, firsts: np.ndarray, ends: np.ndarray) -> None:
    """Counters of empty stores from their groups' keys (``keys[firsts[i]:ends[i]]``, every value indexable):
    one bincount over all of them, each store's key range laid end to end. A range wider than its store's
    ``max_buckets`` takes ``add_keys`` (it collapses)."""
    sizes = ends - firsts
    starts = np.cumsum(sizes) - sizes  # each group's first row among the picked keys
    picked = keys[np.arange(int(sizes.sum())) + np.repeat(firsts - starts, sizes)]
    owner = np.repeat(np.arange(firsts.size), sizes)
    lows = np.minimum.reduceat(picked, starts)
    widths = np.maximum.reduceat(picked, starts) - lows + 1
    offsets = np.cumsum(widths) - widths
    counts = np.bincount(offsets[owner] + picked - lows[owner], minlength=int(widths.sum()))
    for store, lo, width, at, first, end in zip(stores, lows.tolist(), widths.tolist(), offsets.tolist(),
                                                firsts.tolist(), ends.tolist(), strict=True):
        if width > store.max_buckets:
            store.add_keys(keys[first:end])
        else:
            store.counts, store.lo = counts[at : at + width].copy(), lo


_DEFAULT_MAPPING = LogMapping(DEFAULT_RELATIVE_ACCURACY)
