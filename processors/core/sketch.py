"""Relative-error quantile sketch for latencies (the DDSketch construction, written for numpy batches).

Accuracy promise: for any q in [0, 1], ``quantile(q)`` is within ``relative_accuracy`` (default 1 %) of the
exact order statistic of rank ``floor(q * (count - 1))``, i.e. ``np.quantile(x, q, method="lower")``, for
every positive value the store still holds at full resolution. Memory is bounded by ``max_buckets`` counters;
when a batch would need more, the lowest buckets fold into the lowest kept one, so only the smallest values
lose accuracy (2,048 buckets at 1 % span a ratio of about 10^17 between the smallest and largest value).

A value v lands in bucket ``k = ceil(log_gamma(v))`` with ``gamma = (1 + a) / (1 - a)``, so
``gamma^(k-1) < v <= gamma^k``; the bucket reports ``2 gamma^k / (gamma + 1)``, within ``a`` of both bounds.
Values ``<= min_indexable`` (zero, negatives, subnormals) are counted in a separate zero bucket and reported
as 0. NaN and infinities are ignored. Units are whatever the caller passes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

DEFAULT_RELATIVE_ACCURACY = 0.01
DEFAULT_MAX_BUCKETS = 2048

_CONFIG = struct.Struct("<4sdId")  # magic, relative accuracy, max buckets, min indexable
_STATE = struct.Struct("<qqddd")  # zero count, lowest key, sum, min, max
_COUNTS_HEADER = struct.Struct("<BI")  # width code, number of counters
_MAGIC = b"LSK1"
# Width codes for encode_counts: unsigned in the narrowest width that holds the largest count, else int64.
_WIDTHS: tuple[np.dtype, ...] = tuple(
    np.dtype(t).newbyteorder("<") for t in (np.uint8, np.uint16, np.uint32, np.uint64, np.int64)
)


def encode_counts(counts: np.ndarray) -> bytes:
    """Integer counters as a width code, a length and the values in the narrowest little-endian type."""
    flat = np.asarray(counts, dtype=np.int64).ravel()
    if flat.size and int(flat.min()) < 0:
        code = 4
    else:
        top = int(flat.max()) if flat.size else 0
        code = next(i for i, bits in enumerate((8, 16, 32, 64)) if top < 1 << bits)
    return _COUNTS_HEADER.pack(code, flat.size) + flat.astype(_WIDTHS[code]).tobytes()


def decode_counts(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of encode_counts: (int64 counters, offset just past them)."""
    code, n = _COUNTS_HEADER.unpack_from(buf, offset)
    if code >= len(_WIDTHS):
        raise ValueError(f"unknown counter width code {code}")
    offset += _COUNTS_HEADER.size
    dtype = _WIDTHS[code]
    counts = np.frombuffer(buf, dtype=dtype, count=n, offset=offset).astype(np.int64)
    return counts, offset + n * dtype.itemsize


def encode_bucket_counts(counts: np.ndarray) -> bytes:
    """Bucket counters as their length, a bitmap of the non-zero ones and those values (encode_counts).

    Sparse slots (few values spread over many buckets) cost about 1 bit per empty bucket instead of a byte.
    """
    flat = np.asarray(counts, dtype=np.int64).ravel()
    present = flat != 0
    return struct.pack("<I", flat.size) + np.packbits(present).tobytes() + encode_counts(flat[present])


def decode_bucket_counts(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of encode_bucket_counts: (int64 counters, offset just past them)."""
    (n,) = struct.unpack_from("<I", buf, offset)
    offset += 4
    n_bitmap = (n + 7) // 8
    bitmap = np.frombuffer(buf, dtype=np.uint8, count=n_bitmap, offset=offset)
    present = np.unpackbits(bitmap, count=n).astype(bool)
    values, end = decode_counts(buf, offset + n_bitmap)
    if values.size != int(np.count_nonzero(present)):
        raise ValueError("bucket bitmap and values disagree")
    counts = np.zeros(n, dtype=np.int64)
    counts[present] = values
    return counts, end


class SketchState(NamedTuple):
    """A sketch's data without its configuration: counts[i] is the count of bucket lo_key + i."""

    zero_count: int
    lo_key: int
    counts: np.ndarray
    sum: float
    min: float
    max: float


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
    """Mergeable quantile sketch: logarithmic mapping over a bounded dense store (see module docstring)."""

    __slots__ = (
        "_count",
        "_counts",
        "_gamma",
        "_lo",
        "_max",
        "_max_buckets",
        "_min",
        "_min_indexable",
        "_multiplier",
        "_relative_accuracy",
        "_sum",
        "_zero_count",
    )

    def __init__(
        self,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        min_indexable: float | None = None,
    ) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be in (0, 1)")
        if max_buckets < 1:
            raise ValueError("max_buckets must be positive")
        self._relative_accuracy = float(relative_accuracy)
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._multiplier = 1.0 / math.log(self._gamma)
        self._max_buckets = int(max_buckets)
        # Default: the smallest normal double, so every practical positive value keeps the accuracy promise.
        tiny = float(np.finfo(np.float64).tiny) * self._gamma
        self._min_indexable = tiny if min_indexable is None else max(float(min_indexable), tiny)
        self.clear()

    # ----------------------------------------------------------------- state
    def clear(self) -> None:
        self._counts = np.zeros(0, dtype=np.int64)
        self._lo = 0  # key of _counts[0]
        self._zero_count = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def relative_accuracy(self) -> float:
        return self._relative_accuracy

    @property
    def max_buckets(self) -> int:
        return self._max_buckets

    @property
    def min_indexable(self) -> float:
        return self._min_indexable

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
        return int(self._counts.size)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (
            f"LatencySketch(count={self._count}, buckets={self._counts.size}, "
            f"accuracy={self._relative_accuracy})"
        )

    # ----------------------------------------------------------------- adding
    def add(self, value: float) -> None:
        self.add_many(np.array([value], dtype=np.float64))

    def add_many(self, values: np.ndarray) -> None:
        """Add a batch; NaN and infinities are skipped."""
        v = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(v)
        if not finite.all():
            v = v[finite]
        if v.size == 0:
            return
        self._count += int(v.size)
        self._sum += float(v.sum())
        self._min = min(self._min, float(v.min()))
        self._max = max(self._max, float(v.max()))
        indexable = v > self._min_indexable
        n_indexable = int(np.count_nonzero(indexable))
        self._zero_count += int(v.size) - n_indexable
        if n_indexable < v.size:
            v = v[indexable]
        if n_indexable:
            self._add_keys(np.ceil(np.log(v) * self._multiplier).astype(np.int64))

    def _add_keys(self, keys: np.ndarray) -> None:
        lo, hi = int(keys.min()), int(keys.max())
        if self._counts.size:
            hi = max(hi, self._lo + self._counts.size - 1)
        floor = hi - self._max_buckets + 1
        if lo < floor:  # collapse before counting so the temporary array stays bounded too
            keys = np.maximum(keys, floor)
            lo = floor
        self._add_dense(lo, np.bincount(keys - lo))

    def _add_dense(self, lo: int, counts: np.ndarray) -> None:
        """Add counters for keys lo .. lo + len - 1, growing and collapsing the store as needed."""
        hi = lo + counts.size - 1
        cur_hi = self._lo + self._counts.size - 1
        if self._counts.size and lo >= self._lo and hi <= cur_hi:
            self._counts[lo - self._lo : hi - self._lo + 1] += counts
            return
        new_lo, new_hi = (min(lo, self._lo), max(hi, cur_hi)) if self._counts.size else (lo, hi)
        new_lo = max(new_lo, new_hi - self._max_buckets + 1)
        grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        _fold_into(grown, new_lo, self._counts, self._lo)
        _fold_into(grown, new_lo, counts, lo)
        self._counts, self._lo = grown, new_lo

    # ----------------------------------------------------------------- merging
    def _check_compatible(self, other: LatencySketch) -> None:
        if (other._relative_accuracy, other._min_indexable) != (self._relative_accuracy, self._min_indexable):
            raise ValueError("cannot merge sketches with different accuracy or min_indexable")

    def merge(self, other: LatencySketch) -> None:
        """Fold ``other`` into this sketch, as if its values had been added here."""
        self._check_compatible(other)
        if other._count == 0:
            return
        self._count += other._count
        self._zero_count += other._zero_count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        if other._counts.size:
            self._add_dense(other._lo, other._counts)

    @classmethod
    def merge_all(cls, sketches: Sequence[LatencySketch]) -> LatencySketch:
        """A new sketch holding the union of ``sketches`` (one allocation, however many inputs)."""
        if not sketches:
            raise ValueError("merge_all needs at least one sketch")
        first = sketches[0]
        out = first._empty_like()
        full = [s for s in sketches if s._counts.size]
        for s in sketches:
            out._check_compatible(s)
            if s._count:
                out._count += s._count
                out._zero_count += s._zero_count
                out._sum += s._sum
                out._min, out._max = min(out._min, s._min), max(out._max, s._max)
        if full:
            hi = max(s._lo + s._counts.size - 1 for s in full)
            lo = max(min(s._lo for s in full), hi - out._max_buckets + 1)
            out._counts, out._lo = np.zeros(hi - lo + 1, dtype=np.int64), lo
            for s in full:
                _fold_into(out._counts, lo, s._counts, s._lo)
        return out

    def _empty_like(self) -> LatencySketch:
        return LatencySketch(self._relative_accuracy, self._max_buckets, self._min_indexable)

    def copy(self) -> LatencySketch:
        out = self._empty_like()
        out.merge(self)
        return out

    # ----------------------------------------------------------------- querying
    def _key_value(self, keys: np.ndarray) -> np.ndarray:
        return np.exp(keys * (1.0 / self._multiplier)) * (2.0 / (1.0 + self._gamma))

    def quantiles(self, qs: Sequence[float] | np.ndarray) -> np.ndarray:
        """Estimates for each q in ``qs`` (NaN when empty or q outside [0, 1])."""
        q = np.asarray(qs, dtype=np.float64)
        out = np.full(q.shape, np.nan)
        valid = (q >= 0.0) & (q <= 1.0)
        if self._count == 0 or not valid.any():
            return out
        ranks = q[valid] * (self._count - 1)
        cumulative = np.cumsum(self._counts) + self._zero_count
        # First bucket whose cumulative count exceeds the rank holds the order statistic floor(rank).
        idx = np.minimum(np.searchsorted(cumulative, ranks, side="right"), max(self._counts.size - 1, 0))
        estimate = np.where(ranks < self._zero_count, 0.0, self._key_value(self._lo + idx))
        # The extremes are tracked exactly: report them for q = 0 and 1, and never estimate beyond them.
        estimate = np.clip(estimate, self._min, self._max)
        estimate[q[valid] == 0.0] = self._min
        estimate[q[valid] == 1.0] = self._max
        out[valid] = estimate
        return out

    def quantile(self, q: float) -> float:
        return float(self.quantiles(np.array([q]))[0])

    # ----------------------------------------------------------------- bytes
    def export_state(self) -> SketchState:
        """The counters and totals (sharing the counter array: treat it as read-only)."""
        return SketchState(self._zero_count, self._lo, self._counts, self._sum, self._min, self._max)

    def import_state(self, state: SketchState) -> None:
        """Replace this sketch's data with ``state`` (from a sketch of the same configuration)."""
        counts = np.asarray(state.counts, dtype=np.int64)
        if counts.size > self._max_buckets:
            raise ValueError("state has more buckets than max_buckets")
        nz = np.flatnonzero(counts)  # keep the store tight: growth logic assumes non-zero ends
        self._counts = counts[nz[0] : nz[-1] + 1].copy() if nz.size else counts[:0].copy()
        self._lo = int(state.lo_key) + (int(nz[0]) if nz.size else 0)
        self._zero_count = int(state.zero_count)
        self._count = self._zero_count + int(self._counts.sum())
        self._sum, self._min, self._max = float(state.sum), float(state.min), float(state.max)

    def state_to_bytes(self) -> bytes:
        """Counters and totals only; the configuration is the caller's to restore (see load_state)."""
        head = _STATE.pack(self._zero_count, self._lo, self._sum, self._min, self._max)
        return head + encode_bucket_counts(self._counts)

    def load_state(self, buf: bytes | memoryview, offset: int = 0) -> int:
        """Replace this sketch's data with bytes from state_to_bytes; returns the offset just past them."""
        zero_count, lo, total, low, high = _STATE.unpack_from(buf, offset)
        counts, end = decode_bucket_counts(buf, offset + _STATE.size)
        self.import_state(SketchState(zero_count, lo, counts, total, low, high))
        return end

    def to_bytes(self) -> bytes:
        config = _CONFIG.pack(_MAGIC, self._relative_accuracy, self._max_buckets, self._min_indexable)
        return config + self.state_to_bytes()

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview) -> LatencySketch:
        try:
            magic, accuracy, max_buckets, min_indexable = _CONFIG.unpack_from(buf, 0)
        except struct.error as exc:
            raise ValueError("truncated sketch bytes") from exc
        if magic != _MAGIC:
            raise ValueError("not a LatencySketch serialization")
        sketch = cls(accuracy, max_buckets, min_indexable)
        try:
            sketch.load_state(buf, _CONFIG.size)
        except struct.error as exc:
            raise ValueError("truncated sketch bytes") from exc
        return sketch
