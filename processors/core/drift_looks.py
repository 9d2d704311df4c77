"""The figures of many features' looks at once (see drift_monitor.py for what a look is).

While a batch of calls is counted, every feature that crosses a look takes its turn of the ring at once and
leaves what the look compares here (``Looks.compare`` while its reference fills, ``Looks.judge`` once it is
complete); ``Looks.run`` then computes the figures of all of them with one numpy pass per feature shape, instead of
some twenty small numpy calls per look (at 100 series a look comes every ~100 calls of a series and feature).
The figures are the same, bit for bit, as one look at a time would give (tests/unit/processors/core/
test_drift_looks.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from llmpulse.processors.core.drift import ks_distances, ks_p_value, quantile_groups, smoothed_psis

if TYPE_CHECKING:
    from llmpulse.processors.core.drift_monitor import FeatureDrift

MIN_CLASS_VALUES = 10  # a size class with fewer reference values borrows its offset from its neighbours
MIN_EXPECTED = 5  # PSI uses fewer bins when the window would expect fewer values per bin


class Verdict(NamedTuple):
    """The last look at one feature: sizes compared, KS, PSI, the KS distance it had to reach, the outcome."""

    reference: int
    current: int
    ks: float
    ks_p: float
    psi: float
    ks_needed: float
    drifted: bool


def size_offsets(references: np.ndarray) -> np.ndarray:
    """Per reference (..., size class, fine bin), each size class's mean fine-bin index, rounded: what is typical for
    that size. Classes with fewer than MIN_CLASS_VALUES values are interpolated from their neighbours (as
    ``np.interp`` does: linearly between the nearest known classes, the nearest one's beyond them); a reference
    with no such class, or one class only, has offsets 0."""
    *lead, classes, bins = references.shape
    stacked = references.reshape(-1, classes, bins)
    counts = stacked.sum(axis=2)
    known = counts >= MIN_CLASS_VALUES
    out = np.zeros(counts.shape, dtype=np.int64)
    rows = np.flatnonzero(known.any(axis=1)) if classes > 1 else np.zeros(0, dtype=np.int64)
    if rows.size:
        counts, known = counts[rows], known[rows]
        centre = (stacked[rows] @ np.arange(bins)) / np.maximum(counts, 1)
        index = np.arange(classes)
        left = np.maximum.accumulate(np.where(known, index, -1), axis=1)  # the nearest known class at or below
        right = np.minimum.accumulate(np.where(known, index, classes)[:, ::-1], axis=1)[:, ::-1]  # at or above
        at_left = np.take_along_axis(centre, np.maximum(left, 0), axis=1)
        at_right = np.take_along_axis(centre, np.minimum(right, classes - 1), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # the rows between two known classes are read only
            slope = (at_right - at_left) / (right - left).astype(np.float64)
            between = slope * (index - left).astype(np.float64) + at_left
        value = np.where(left < 0, at_right, np.where((right >= classes) | (left == index), at_left, between))
        out[rows] = np.rint(value).astype(np.int64)
    return out.reshape(*lead, classes)


def residual_counts(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Counts per (..., size class, fine bin) -> counts per bin relative to each class's offset (..., 2 x bins - 1)."""
    *lead, classes, bins = counts.shape
    width = 2 * bins - 1
    stacked, shifts = counts.reshape(-1, classes, bins), offsets.reshape(-1, classes)
    index = (bins - 1 - shifts)[:, :, None] + np.arange(bins) + (np.arange(len(stacked)) * width)[:, None, None]
    out = np.bincount(index.ravel(), weights=stacked.ravel(), minlength=len(stacked) * width)
    return out.astype(np.int64).reshape(*lead, width)


def look_counts(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Stacked counts (rows, classes, bins) as the rows a look compares: relative to the offsets for several size
    classes, as they are for one."""
    return counts[:, 0] if counts.shape[1] == 1 else residual_counts(counts, offsets)


class Looks:
    """The looks crossed while one batch is counted, figured together by ``run`` (compares first, so a feature that
    completes its reference and is judged in the same batch is judged against its whole natural variation)."""

    def __init__(self) -> None:
        self._compares: dict[tuple[int, ...], list[tuple[FeatureDrift, np.ndarray, np.ndarray]]] = defaultdict(list)
        self._judges: dict[tuple[int, ...], list[tuple[FeatureDrift, np.ndarray]]] = defaultdict(list)

    def compare(self, feature: FeatureDrift, reference: np.ndarray, window: np.ndarray) -> None:
        """The reference is filling: how far this window strays from the reference before it (copies taken now)."""
        self._compares[reference.shape].append((feature, reference, window))

    def judge(self, feature: FeatureDrift, window: np.ndarray) -> None:
        """The reference is complete: this window (a copy taken now) against it. A later judgement of the same
        feature in the batch replaces an earlier one."""
        self._judges[window.shape].append((feature, window))

    def run(self) -> None:
        for items in self._compares.values():
            self._compare_all(items)
        for items in self._judges.values():
            self._judge_all(items)
        self._compares.clear()
        self._judges.clear()

    @staticmethod
    def _compare_all(items: list[tuple[FeatureDrift, np.ndarray, np.ndarray]]) -> None:
        references = np.stack([reference for _, reference, _ in items])
        windows = np.stack([window for _, _, window in items])
        offsets = size_offsets(references)
        references, windows = look_counts(references, offsets), look_counts(windows, offsets)
        totals = references.sum(axis=1)
        distances = ks_distances(np.cumsum(references, axis=1) / np.maximum(totals, 1)[:, None], windows)
        distances[totals == 0] = math.nan
        for (feature, _, _), distance in zip(items, distances.tolist(), strict=True):
            if distance == distance:
                feature.natural = max(feature.natural, distance)

    @staticmethod
    def _judge_all(items: list[tuple[FeatureDrift, np.ndarray]]) -> None:
        features = [feature for feature, _ in items]
        current = look_counts(np.stack([window for _, window in items]),
                              np.stack([feature.offsets for feature in features]))
        sizes = current.sum(axis=1)
        distances = ks_distances(np.stack([feature.reference_cdf for feature in features]), current).tolist()
        # PSI over the reference's quantile groups; the groups of each judged window's size, rows of one group count
        # computed together
        running = np.concatenate([np.zeros((len(items), 1), dtype=np.int64), np.cumsum(current, axis=1)], axis=1)
        by_count: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
        for row, (feature, n) in enumerate(zip(features, sizes.tolist(), strict=True)):
            k = min(feature.config.psi_bins, n // MIN_EXPECTED)
            if k >= feature.config.psi_bins:
                starts, reference = feature.psi_groups, feature.reference_psi
            else:
                starts = quantile_groups(feature.reference_residuals, max(2, k))
                reference = np.add.reduceat(feature.reference_residuals, starts)
            by_count[starts.size].append((row, starts, reference))
        psis = np.empty(len(items))
        for grouped in by_count.values():
            rows = np.array([row for row, _, _ in grouped])
            starts = np.stack([starts for _, starts, _ in grouped])
            ends = np.concatenate([starts[:, 1:], np.full((len(rows), 1), current.shape[1])], axis=1)
            sums = np.take_along_axis(running[rows], ends, axis=1) - np.take_along_axis(running[rows], starts, axis=1)
            psis[rows] = smoothed_psis(np.stack([reference for _, _, reference in grouped]), sums)
        for feature, n, distance, psi in zip(features, sizes.tolist(), distances, psis.tolist(), strict=True):
            config, settled = feature.config, feature.settled
            if settled == 0 or n == 0:
                distance = p_value = math.nan
            else:
                p_value = ks_p_value(distance, settled, n)
            needed = config.natural_margin * feature.natural
            drifted = p_value < config.look_alpha and distance >= needed and psi >= config.psi_warning
            feature.verdict = Verdict(settled, n, distance, p_value, psi, needed, bool(drifted))
