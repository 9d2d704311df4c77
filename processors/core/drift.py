"""Drift of a metric against its baseline: mean shift, and distribution shift over binned counts (KS, PSI).

Everything here only computes; thresholds (e.g. 10 % mean change = warning, 15 % = critical; PSI bands) are
the alert policy's business. ``MeanDrift`` compares the running mean of a baseline (the first N
observations, or everything before a reference time) with a recent window. ``BinnedDistribution`` keeps
counts over edges the caller fixes once, so reference and current can be compared at any time without
keeping raw values: ``ks_statistic`` (two-sample Kolmogorov-Smirnov on the binned CDFs, asymptotic p-value)
wants fine bins (100+). PSI wants few bins that each hold a fair share of the reference: ``quantile_groups``
merges fine bins into ~10 groups of equal reference mass, so no group the reference left empty can blow PSI
up, and ``smoothed_psi`` adds half a count to every group (Jeffreys) instead of flooring proportions.
On n1 and n2 values from one population, PSI over k such groups averages about (k - 1)(1/n1 + 1/n2).
"""

from __future__ import annotations

import math
import struct
from typing import Literal, NamedTuple

import numpy as np

from llmpulse.processors.core.abtest import Welford
from llmpulse.processors.core.counter_bytes import decode_counts, encode_counts, read_varint, unzigzag, varint, zigzag

PsiBand = Literal["stable", "moderate", "significant"]
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.2
SMOOTHING = 0.5  # added to every count before PSI takes proportions (Jeffreys)

_MEAN_DRIFT = struct.Struct("<4sqqqq")  # magic, baseline size, current size, min current, reference end
_RECENT = struct.Struct("<q")  # recent size (MDR2)
_MOMENTS = struct.Struct("<dd")  # a Welford's mean and M2 (MDR3, after its varint count)
_ZERO_MOMENTS = _MOMENTS.pack(0.0, 0.0)
_BINNED = struct.Struct("<4sI")  # magic, number of edges
_NO_REFERENCE_END = -1


def _merged(previous: Welford, block: Welford) -> Welford:
    merged = previous.copy()
    merged.merge(block)
    return merged


def _tumble_one(previous: Welford, block: Welford, size: int, value: float) -> tuple[Welford, Welford]:
    """``_tumble`` of one value (not NaN), without numpy."""
    if block.count >= size:
        previous, block = block, Welford()
    block.add(value)
    return (block, Welford()) if block.count >= size else (previous, block)


def _tumble(previous: Welford, block: Welford, size: int, values: np.ndarray) -> tuple[Welford, Welford]:
    """Two tumbling blocks of ``size`` (the last completed, the one filling) after ``values``: one pass per block
    boundary crossed, batch / size + 1 iterations."""
    while values.size:
        room = size - block.count
        block.update(values[:room])
        values = values[room:]
        if block.count >= size:
            previous, block = block, Welford()
    return previous, block


class MeanDrift:
    """Percent change of a recent mean against a baseline mean, from running Welford statistics.

    Baseline: the first ``baseline_size`` observations, or when ``reference_end_ms`` is set, every observation
    timestamped before it. Current: two tumbling blocks of ``current_size`` observations (the last completed
    one plus the one filling), i.e. the latest ``current_size`` to ``2 * current_size`` observations. Recent
    (with ``recent_size``): the same over blocks of ``recent_size``, the latest calls alone, which tell that a
    shift is over long before the current window has forgotten it.
    """

    __slots__ = ("_baseline", "_block", "_previous", "_recent", "_recent_previous", "baseline_size", "current_size",
                 "min_current", "recent_size", "reference_end_ms")

    def __init__(
        self,
        baseline_size: int = 1000,
        current_size: int = 1000,
        min_current: int = 30,
        reference_end_ms: int | None = None,
        recent_size: int = 0,
    ) -> None:
        if baseline_size < 2 or current_size < 1 or min_current < 1 or recent_size < 0:
            raise ValueError("baseline_size must be >= 2, current_size and min_current >= 1, recent_size >= 0")
        self.baseline_size = baseline_size
        self.current_size = current_size
        self.min_current = min_current
        self.recent_size = recent_size
        self.reference_end_ms = reference_end_ms
        self._baseline = Welford()
        self._previous = Welford()
        self._block = Welford()
        self._recent_previous = Welford()
        self._recent = Welford()

    @property
    def baseline(self) -> Welford:
        return self._baseline.copy()

    @property
    def current(self) -> Welford:
        return _merged(self._previous, self._block)

    @property
    def baseline_ready(self) -> bool:
        if self.reference_end_ms is not None:
            return self._baseline.count >= 2
        return self._baseline.count >= self.baseline_size

    def update(self, values: np.ndarray, timestamps_ms: np.ndarray | None = None) -> None:
        """Add a batch (NaN skipped); ``timestamps_ms`` is required when a reference period is configured."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if self.reference_end_ms is not None:
            if timestamps_ms is None:
                raise ValueError("timestamps_ms is required when reference_end_ms is set")
            in_reference = np.asarray(timestamps_ms) < self.reference_end_ms
            self._baseline.update(v[in_reference])
            self._update_current(v[~in_reference])
            return
        v = v[~np.isnan(v)]
        room = self.baseline_size - self._baseline.count
        if room > 0:
            self._baseline.update(v[:room])
            v = v[room:]
        self._update_current(v)

    def add(self, value: float) -> None:
        """One observation (NaN skipped) in count mode: ``update`` of a one-value batch, bit for bit, without
        numpy."""
        if self.reference_end_ms is not None:
            raise ValueError("add is for count mode; with a reference period use update with timestamps")
        if value != value:
            return
        if self._baseline.count < self.baseline_size:
            self._baseline.add(value)
            return
        if self.recent_size:
            self._recent_previous, self._recent = _tumble_one(self._recent_previous, self._recent, self.recent_size,
                                                              value)
        self._previous, self._block = _tumble_one(self._previous, self._block, self.current_size, value)

    def _update_current(self, v: np.ndarray) -> None:
        v = v[~np.isnan(v)]
        if self.recent_size:
            self._recent_previous, self._recent = _tumble(self._recent_previous, self._recent, self.recent_size, v)
        self._previous, self._block = _tumble(self._previous, self._block, self.current_size, v)

    def percent_change(self) -> float:
        """100 * (current mean - baseline mean) / |baseline mean|; NaN until both sides have enough data."""
        return self._change(self.current, self.min_current)

    def recent_percent_change(self) -> float:
        """The same change over the latest ``recent_size`` to ``2 * recent_size`` observations; NaN without a
        recent window, or until it has ``recent_size`` of them."""
        if not self.recent_size:
            return math.nan
        return self._change(_merged(self._recent_previous, self._recent), self.recent_size)

    def _change(self, window: Welford, min_count: int) -> float:
        base = self._baseline.mean
        if not self.baseline_ready or window.count < min_count or base == 0.0:
            return math.nan
        return 100.0 * (window.mean - base) / abs(base)

    def rebaseline(self) -> None:
        """Accept the current window as the new baseline (e.g. after an intended change); topped up to
        ``baseline_size`` by the next observations in count mode."""
        self._baseline = self.current
        self._previous, self._block = Welford(), Welford()
        self._recent_previous, self._recent = Welford(), Welford()

    def to_bytes(self) -> bytes:
        """MDR3: sizes and counts as varints, and an empty Welford as one byte (~35 bytes instead of 164)."""
        end = 0 if self.reference_end_ms is None else zigzag(self.reference_end_ms) + 1
        out = [b"MDR3", varint(self.baseline_size), varint(self.current_size), varint(self.min_current),
               varint(self.recent_size), varint(end)]
        for w in (self._baseline, self._previous, self._block, self._recent_previous, self._recent):
            moments = _MOMENTS.pack(w.mean, w.m2)
            if w.count or moments != _ZERO_MOMENTS:
                out += [varint(2 * w.count + 1), moments]
            else:
                out.append(b"\0")
        return b"".join(out)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, recent_size: int = 0) -> MeanDrift:
        """``recent_size``: for the first format (MDR1), which had no recent window; it starts empty."""
        if bytes(buf[:4]) == b"MDR3":
            return cls._from_varints(buf)
        try:
            magic, baseline_size, current_size, min_current, end = _MEAN_DRIFT.unpack_from(buf, 0)
            if magic not in (b"MDR1", b"MDR2"):
                raise ValueError("not a MeanDrift serialization")
            offset = _MEAN_DRIFT.size
            if magic == b"MDR2":
                (recent_size,) = _RECENT.unpack_from(buf, offset)
                offset += _RECENT.size
            out = cls(baseline_size, current_size, min_current, None if end == _NO_REFERENCE_END else end, recent_size)
            size = len(Welford().to_bytes())
            out._baseline = Welford.from_bytes(buf, offset)
            out._previous = Welford.from_bytes(buf, offset + size)
            out._block = Welford.from_bytes(buf, offset + 2 * size)
            if magic == b"MDR2":
                out._recent_previous = Welford.from_bytes(buf, offset + 3 * size)
                out._recent = Welford.from_bytes(buf, offset + 4 * size)
        except struct.error as exc:
            raise ValueError("truncated MeanDrift bytes") from exc
        return out

    @classmethod
    def _from_varints(cls, buf: bytes | memoryview) -> MeanDrift:
        try:
            at = 4
            figures = []
            for _ in range(5):  # baseline, current and min current sizes, recent size, reference end
                value, at = read_varint(buf, at)
                figures.append(value)
            baseline_size, current_size, min_current, recent_size, end = figures
            out = cls(baseline_size, current_size, min_current, unzigzag(end - 1) if end else None, recent_size)
            welfords = []
            for _ in range(5):
                code, at = read_varint(buf, at)
                moments = (0.0, 0.0)
                if code & 1:
                    moments = _MOMENTS.unpack_from(buf, at)
                    at += _MOMENTS.size
                welfords.append(Welford(code >> 1, *moments))
        except (struct.error, IndexError) as exc:
            raise ValueError("truncated MeanDrift bytes") from exc
        out._baseline, out._previous, out._block, out._recent_previous, out._recent = welfords
        return out


def log_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """n log-spaced bins between lo and hi (n + 1 edges), for latencies and token counts."""
    if not 0 < lo < hi or n < 1:
        raise ValueError("need 0 < lo < hi and n >= 1")
    return np.geomspace(lo, hi, n + 1)


def linear_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """n equal-width bins between lo and hi (n + 1 edges), e.g. confidence in [0, 1]."""
    if not lo < hi or n < 1:
        raise ValueError("need lo < hi and n >= 1")
    return np.linspace(lo, hi, n + 1)


class BinnedDistribution:
    """Counts over fixed edges, plus an underflow and an overflow bin: len(edges) + 1 bins in all.

    Bin i holds values in [edges[i-1], edges[i]); NaN is skipped, infinities land in the outer bins.
    """

    __slots__ = ("_counts", "_edges")

    def __init__(self, edges: np.ndarray) -> None:
        e = np.asarray(edges, dtype=np.float64).ravel()
        if e.size == 0 or not np.isfinite(e).all() or (np.diff(e) <= 0).any():
            raise ValueError("edges must be finite and strictly increasing")
        self._edges = e
        self._edges.flags.writeable = False
        self._counts = np.zeros(e.size + 1, dtype=np.int64)

    @property
    def edges(self) -> np.ndarray:
        return self._edges

    @property
    def counts(self) -> np.ndarray:
        return self._counts.copy()

    @property
    def total(self) -> int:
        return int(self._counts.sum())

    def update(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size:
            bins = np.searchsorted(self._edges, v, side="right")
            self._counts += np.bincount(bins, minlength=self._counts.size)

    def merge(self, other: BinnedDistribution) -> None:
        if not np.array_equal(self._edges, other._edges):
            raise ValueError("cannot merge distributions with different edges")
        self._counts += other._counts

    def clear(self) -> None:
        self._counts[:] = 0

    def copy(self) -> BinnedDistribution:
        out = BinnedDistribution(self._edges)
        out._counts += self._counts
        return out

    def coarsen(self, factor: int) -> BinnedDistribution:
        """The same data over every ``factor``-th edge (last edge kept): fine bins for KS, coarse for PSI."""
        if factor < 1:
            raise ValueError("factor must be >= 1")
        kept = np.arange(0, self._edges.size, factor)
        if kept[-1] != self._edges.size - 1:
            kept = np.append(kept, self._edges.size - 1)
        out = BinnedDistribution(self._edges[kept])
        # Old bin i covers [edges[i-1], edges[i]); new bin j gathers old bins kept[j-1] + 1 .. kept[j].
        out._counts[:] = np.add.reduceat(self._counts, np.concatenate(([0], kept + 1)))
        return out

    def to_bytes(self) -> bytes:
        header = _BINNED.pack(b"BIN1", self._edges.size)
        return header + self._edges.astype("<f8").tobytes() + encode_counts(self._counts)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview) -> BinnedDistribution:
        try:
            magic, n = _BINNED.unpack_from(buf, 0)
            if magic != b"BIN1":
                raise ValueError("not a BinnedDistribution serialization")
            out = cls(np.frombuffer(buf, dtype="<f8", count=n, offset=_BINNED.size))
            counts, _ = decode_counts(buf, _BINNED.size + 8 * n)
        except struct.error as exc:
            raise ValueError("truncated BinnedDistribution bytes") from exc
        if counts.size != out._counts.size:
            raise ValueError("bin count does not match the edges")
        out._counts[:] = counts
        return out


class KSResult(NamedTuple):
    statistic: float
    p_value: float


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution, from whichever of its two series converges fast."""
    if lam <= 0.0:
        return 1.0
    if lam < 1.18:
        # Jacobi-theta form of the CDF: sqrt(2 pi)/lam * sum_k exp(-(2k-1)^2 pi^2 / (8 lam^2)).
        y = math.exp(-(math.pi**2) / (8.0 * lam * lam))
        cdf = math.sqrt(2.0 * math.pi) / lam * (y + y**9 + y**25 + y**49)
        return min(1.0, max(0.0, 1.0 - cdf))
    # Alternating series 2 sum_k (-1)^(k-1) exp(-2 k^2 lam^2); four terms reach double precision here.
    x = math.exp(-2.0 * lam * lam)
    return min(1.0, max(0.0, 2.0 * (x - x**4 + x**9 - x**16)))


def _check_same_edges(reference: BinnedDistribution, current: BinnedDistribution) -> None:
    if not np.array_equal(reference.edges, current.edges):
        raise ValueError("distributions must share their edges")


def ks_statistic(reference: BinnedDistribution, current: BinnedDistribution) -> KSResult:
    """Two-sample KS: largest gap between the binned CDFs, p-value from the asymptotic Kolmogorov law with
    n_eff = n1 n2 / (n1 + n2) and Stephens' small-sample correction. NaN when either side is empty."""
    _check_same_edges(reference, current)
    return ks_counts(reference.counts, current.counts)


def ks_counts(reference: np.ndarray, current: np.ndarray) -> KSResult:
    """``ks_statistic`` on two count arrays over the same bins."""
    n1 = int(reference.sum())
    return ks_from_cdf(np.cumsum(reference) / max(1, n1), n1, current)


def ks_from_cdf(reference_cdf: np.ndarray, n1: int, current: np.ndarray) -> KSResult:
    """``ks_counts`` given the reference's cumulative shares per bin and its size (when it is compared often)."""
    n2 = int(current.sum())
    if n1 == 0 or n2 == 0:
        return KSResult(math.nan, math.nan)
    d = float(ks_distances(np.asarray(reference_cdf)[None], np.asarray(current)[None])[0])
    return KSResult(d, ks_p_value(d, n1, n2))


def ks_distances(reference_cdfs: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per row, the largest gap between a reference's cumulative shares and those of the current counts (NaN for
    an empty current row): ``ks_from_cdf``'s statistic of many pairs at once."""
    totals = current.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(reference_cdfs - np.cumsum(current, axis=1) / totals[:, None]).max(axis=1)


def ks_p_value(distance: float, n1: int, n2: int) -> float:
    """The asymptotic p-value of a KS distance between samples of n1 and n2 values (both > 0), with n_eff =
    n1 n2 / (n1 + n2) and Stephens' small-sample correction."""
    root = math.sqrt(n1 * n2 / (n1 + n2))
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * distance)


def smoothed_psi(reference: np.ndarray, current: np.ndarray, smoothing: float = SMOOTHING) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins, a and e the current and reference proportions after adding
    ``smoothing`` to every count (additive smoothing; 0.5 is Jeffreys'), so an empty bin stays finite without a
    floor that turns a handful of values into a large index. NaN when either side is empty."""
    if smoothing <= 0:
        raise ValueError("smoothing must be positive")
    return float(smoothed_psis(np.asarray(reference)[None], np.asarray(current)[None], smoothing)[0])


def smoothed_psis(reference: np.ndarray, current: np.ndarray, smoothing: float = SMOOTHING) -> np.ndarray:
    """``smoothed_psi`` of each row pair (rows of one length)."""
    r, c = reference.astype(np.float64), current.astype(np.float64)
    r_total, c_total = r.sum(axis=1), c.sum(axis=1)
    e = (r + smoothing) / (r_total + smoothing * r.shape[1])[:, None]
    a = (c + smoothing) / (c_total + smoothing * c.shape[1])[:, None]
    out = np.sum((a - e) * np.log(a / e), axis=1)
    out[(r_total == 0) | (c_total == 0)] = math.nan
    return out


def quantile_groups(reference: np.ndarray, groups: int) -> np.ndarray:
    """Start indices (for ``np.add.reduceat``) of at most ``groups`` runs of consecutive bins holding about
    equal shares of the reference's mass: bins from the reference's quantiles. A point mass keeps its own
    group; every group holds reference mass, so values beyond the reference's range join its outer groups."""
    counts = np.asarray(reference, dtype=np.float64)
    total = counts.sum()
    if groups < 1:
        raise ValueError("groups must be >= 1")
    if total == 0 or groups == 1:
        return np.zeros(1, dtype=np.int64)
    cdf = np.cumsum(counts) / total
    ends = np.searchsorted(cdf, np.arange(1, groups) / groups, side="left")  # last bin of each group
    ends = np.unique(ends[cdf[ends] < 1.0])  # a group must leave reference mass for the next one
    return np.concatenate(([0], ends + 1)).astype(np.int64)


def quantile_psi(
    reference: np.ndarray, current: np.ndarray, bins: int = 10, smoothing: float = SMOOTHING, min_expected: int = 5
) -> float:
    """Smoothed PSI over ``bins`` reference-quantile groups of two count arrays (same fine bins), fewer when the
    current side is small: each group expects at least ``min_expected`` current values."""
    n = int(np.asarray(current).sum())
    starts = quantile_groups(reference, max(2, min(bins, n // max(1, min_expected))))
    return smoothed_psi(np.add.reduceat(reference, starts), np.add.reduceat(current, starts), smoothing)


def psi(reference: BinnedDistribution, current: BinnedDistribution, smoothing: float = SMOOTHING) -> float:
    """``smoothed_psi`` over the distributions' own bins (coarsen first: few bins). NaN when either side is
    empty. For bins cut at the reference's quantiles use ``quantile_psi`` on the fine counts."""
    _check_same_edges(reference, current)
    return smoothed_psi(reference.counts, current.counts, smoothing)


def psi_band(value: float) -> PsiBand:
    """Conventional reading: below 0.1 stable, 0.1 up to 0.2 moderate shift, 0.2 and above significant.
    NaN (a side without data) reads as stable: there is no evidence of a shift."""
    if math.isnan(value) or value < PSI_MODERATE:
        return "stable"
    if value < PSI_SIGNIFICANT:
        return "moderate"
    return "significant"
