"""Quantiles of unions of latency sketches, for many owners at once.

An owner is whatever the sketches are merged for: a series' window (its slot sketches), or a service's (the
windows of all its series). ``quantiles`` gives exactly what ``LatencySketch.merge_all`` of an owner's sketches
followed by ``LatencySketch.quantiles`` gives, without building a sketch per owner: every sketch's counters
concatenated, one sort by (owner, bucket), sums per bucket by ``reduceat``, and each rank found by one
``searchsorted`` over (owner, cumulative count).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from llmpulse.processors.core.sketch import LatencySketch

_RANK_BITS = 40  # composite (owner, cumulative count) keys: counts stay below 2^40


class SketchUnion:
    """Sketches gathered per owner (``add``), read as each owner's count (``counts``) and quantiles."""

    def __init__(self, owners: int) -> None:
        self.owners = owners
        # an entry per sketch as flat Python lists (no tuple per sketch for the garbage collector to track)
        self._of: list[int] = []
        self._counts: list[int] = []
        self._zeros: list[int] = []
        self._lows: list[float] = []
        self._highs: list[float] = []
        self._block_owners: list[int] = []
        self._los: list[int] = []
        self._blocks: list[np.ndarray] = []
        self._mapping = None
        self._max_buckets = 0
        self._totals: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, owner: int, sketches: Iterable[LatencySketch]) -> None:
        for sketch in sketches:
            store = sketch.store
            self._mapping, self._max_buckets = sketch.mapping, store.max_buckets
            if sketch.count:
                self._of.append(owner)
                self._counts.append(sketch.count)
                self._zeros.append(sketch._zero_count)
                self._lows.append(sketch._min)
                self._highs.append(sketch._max)
            if store.counts.size:
                self._block_owners.append(owner)
                self._los.append(store.lo)
                self._blocks.append(store.counts)
        self._totals = None

    def counts(self) -> np.ndarray:
        """Values per owner."""
        return self._summed()[0]

    def quantiles(self, qs: np.ndarray) -> np.ndarray:
        """Per owner (rows of ``qs``, one per owner) the quantiles its row asks for; NaN rows for owners with no
        values."""
        count, zeros, low, high = self._summed()
        n = self.owners
        figures = np.full(qs.shape, np.nan)
        counted = np.flatnonzero(count)
        if counted.size == 0:
            return figures
        ranks = qs * (count - 1)[:, None]
        owner, keys, counts = self._filled_buckets()
        if keys.size:
            order = np.lexsort((keys, owner))
            owner, keys, counts = owner[order], keys[order], counts[order]
            first = np.flatnonzero(np.r_[True, (owner[1:] != owner[:-1]) | (keys[1:] != keys[:-1])])
            owner, keys, counts = owner[first], keys[first], np.add.reduceat(counts, first)
            starts = np.searchsorted(owner, np.arange(n))
            ends = np.searchsorted(owner, np.arange(n), side="right")
            running = np.cumsum(counts)
            before = np.r_[0, running][starts]  # cumulative count before each owner's first bucket
            cumulative = running - before[owner] + zeros[owner]
            composite = (owner << _RANK_BITS) + cumulative
            # first bucket whose cumulative count exceeds the rank: cumulative >= floor(rank) + 1
            wanted = (np.arange(n)[:, None] << _RANK_BITS) + (np.floor(ranks).astype(np.int64) + 1)
            at = np.searchsorted(composite, wanted, side="left")
            at = np.clip(at, starts[:, None], np.maximum(ends - 1, starts)[:, None])
            assert self._mapping is not None
            bucket_values = self._mapping.values_of(keys[np.minimum(at, keys.size - 1)])
        else:
            bucket_values = np.zeros_like(ranks)
        estimate = np.where(ranks < zeros[:, None], 0.0, bucket_values)
        estimate = np.clip(estimate, low[:, None], high[:, None])
        estimate = np.where(qs == 0.0, low[:, None], np.where(qs == 1.0, high[:, None], estimate))
        figures[counted] = estimate[counted]
        return figures

    def _filled_buckets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(owner, bucket key, count) of every filled bucket of every sketch, each owner's lowest buckets folded as
        its union folds them. Only the filled ones: a store spans its lowest to its highest bucket (a few calls
        over ~2 decades of latency span hundreds of buckets, nearly all empty), and an empty one never holds a
        rank."""
        if not self._blocks:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        sizes = np.fromiter((b.size for b in self._blocks), dtype=np.int64, count=len(self._blocks))
        los = np.asarray(self._los, dtype=np.int64)
        block_owners = np.asarray(self._block_owners, dtype=np.int64)
        top = np.full(self.owners, np.iinfo(np.int64).min)
        np.maximum.at(top, block_owners, los + sizes - 1)
        everything = np.concatenate(self._blocks)
        filled = np.flatnonzero(everything)
        block_starts = np.r_[0, np.cumsum(sizes)[:-1]]
        block = np.searchsorted(block_starts, filled, side="right") - 1
        owner = block_owners[block]
        keys = np.maximum(los[block] + (filled - block_starts[block]), top[owner] - self._max_buckets + 1)
        return owner, keys, everything[filled]

    def _summed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._totals is None:
            n = self.owners
            count = np.zeros(n, dtype=np.int64)
            zeros = np.zeros(n, dtype=np.int64)
            low, high = np.full(n, np.inf), np.full(n, -np.inf)
            if self._of:
                np.add.at(count, self._of, self._counts)
                np.add.at(zeros, self._of, self._zeros)
                np.minimum.at(low, self._of, self._lows)
                np.maximum.at(high, self._of, self._highs)
            self._totals = count, zeros, low, high
        return self._totals
