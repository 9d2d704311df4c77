"""Looks figured together give the figures one look at a time gives, bit for bit, whatever else is in the batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmpulse.processors.core.drift import ks_counts, ks_from_cdf, quantile_groups, smoothed_psi
from llmpulse.processors.core.drift_looks import (
    MIN_CLASS_VALUES,
    MIN_EXPECTED,
    Looks,
    Verdict,
    residual_counts,
    size_offsets,
)
from llmpulse.processors.core.drift_monitor import _CLASSES, _EDGES, FEATURES, DriftConfig, FeatureDrift

CONFIG = DriftConfig()
STRICTER = DriftConfig(alpha=0.0001, natural_margin=2.0, psi_warning=0.3, psi_bins=8)  # one batch may hold both


def _offsets_as_defined(reference: np.ndarray) -> np.ndarray:
    """Each size class's mean fine bin where it holds MIN_CLASS_VALUES, np.interp between and beyond those."""
    classes, bins = reference.shape
    counts = reference.sum(axis=1)
    known = np.flatnonzero(counts >= MIN_CLASS_VALUES)
    if classes == 1 or known.size == 0:
        return np.zeros(classes, dtype=np.int64)
    centre = (reference[known] @ np.arange(bins)) / counts[known]
    return np.rint(np.interp(np.arange(classes), known, centre)).astype(np.int64)


def _residuals_as_defined(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    classes, bins = counts.shape
    out = np.zeros(2 * bins - 1, dtype=np.int64)
    for size_class in range(classes):
        start = bins - 1 - int(offsets[size_class])
        out[start : start + bins] += counts[size_class]
    return out


def _counts(rng: np.random.Generator, classes: int, bins: int, total: int) -> np.ndarray:
    """Counts over a few size classes (some too sparse to know), clustered around a bin that moves with the class."""
    counts = np.zeros((classes, bins), dtype=np.int64)
    used = rng.choice(classes, size=min(classes, int(rng.integers(1, 6))), replace=False)
    for size_class in used:
        centre = int(rng.integers(0, bins))
        values = np.clip(np.rint(rng.normal(centre, rng.uniform(0.5, 8.0), int(rng.integers(1, total)))), 0, bins - 1)
        counts[size_class] += np.bincount(values.astype(np.int64), minlength=bins)
    return counts


@pytest.mark.parametrize("seed", range(3))
def test_stacked_offsets_and_residuals_are_the_ones_defined_per_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    references = np.stack([_counts(rng, 22, 102, 60) for _ in range(300)])
    references[0] = 0  # no size class known
    references[1] = 0
    references[1, 7, 40] = MIN_CLASS_VALUES  # one class known: every class takes its offset
    offsets = size_offsets(references)
    residuals = residual_counts(references, offsets)
    for reference, offset, residual in zip(references, offsets, residuals, strict=True):
        assert np.array_equal(offset, _offsets_as_defined(reference))
        assert np.array_equal(residual, _residuals_as_defined(reference, offset))
    assert np.array_equal(offsets[1], np.full(22, 40))
    assert np.array_equal(size_offsets(references[5]), offsets[5])  # one reference as it is


def _frozen(rng: np.random.Generator, feature: str, config: DriftConfig) -> FeatureDrift:
    drift = FeatureDrift(config, _EDGES[feature], _CLASSES.get(feature, 1))
    classes, bins = drift.reference.shape
    drift.add_cells(np.flatnonzero(_counts(rng, classes, bins, 2_000).ravel() > 0).repeat(3)[: config.reference_size])
    drift.add_cells(rng.integers(0, classes * bins, config.reference_size).tolist())
    drift.natural = float(rng.uniform(0.0, 0.2))
    assert drift.frozen
    return drift


def _verdict_as_defined(drift: FeatureDrift, window: np.ndarray) -> Verdict:
    """drift_monitor's look at one feature, from drift.py's one-pair functions."""
    c, n = drift.config, int(window.sum())
    current = window[0] if window.shape[0] == 1 else residual_counts(window, drift.offsets)
    ks = ks_from_cdf(drift.reference_cdf, drift.settled, current)
    k = min(c.psi_bins, n // MIN_EXPECTED)
    groups = drift.psi_groups if k >= c.psi_bins else quantile_groups(drift.reference_residuals, max(2, k))
    psi = smoothed_psi(np.add.reduceat(drift.reference_residuals, groups), np.add.reduceat(current, groups))
    needed = c.natural_margin * drift.natural
    drifted = ks.p_value < c.look_alpha and ks.statistic >= needed and psi >= c.psi_warning
    return Verdict(drift.settled, n, ks.statistic, ks.p_value, psi, needed, bool(drifted))


@pytest.mark.parametrize("seed", range(3))
def test_judgements_figured_together_are_the_ones_figured_one_by_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    looks, expected = Looks(), []
    for _ in range(60):
        feature = str(rng.choice(FEATURES))
        drift = _frozen(rng, feature, CONFIG if rng.random() < 0.5 else STRICTER)
        classes, bins = drift.reference.shape
        # windows of every size a judgement sees: fewer than psi_bins x MIN_EXPECTED values use fewer PSI groups
        window = _counts(rng, classes, bins, int(rng.choice([20, 60, 500])))
        if rng.random() < 0.3:  # shifted: some of these drift
            window = np.roll(window, int(rng.integers(3, 20)), axis=1)
        looks.judge(drift, window)
        expected.append((drift, _verdict_as_defined(drift, window)))
    looks.run()
    for drift, verdict in expected:
        assert drift.verdict == verdict or (math.isnan(verdict.ks) and drift.verdict is not None
                                            and math.isnan(drift.verdict.ks))
    assert any(verdict.drifted for _, verdict in expected) and not all(verdict.drifted for _, verdict in expected)
    assert len({verdict.psi for _, verdict in expected}) > 1


@pytest.mark.parametrize("seed", range(3))
def test_distances_while_references_fill_are_the_ones_figured_one_by_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    looks, expected = Looks(), []
    for _ in range(60):
        feature = str(rng.choice(FEATURES))
        drift = FeatureDrift(CONFIG, _EDGES[feature], _CLASSES.get(feature, 1))
        drift.natural = float(rng.uniform(0.0, 0.1))
        classes, bins = drift.reference.shape
        reference, window = _counts(rng, classes, bins, 800), _counts(rng, classes, bins, 300)
        offsets = _offsets_as_defined(reference)
        distance = ks_counts(_residuals_as_defined(reference, offsets), _residuals_as_defined(window, offsets))
        expected.append((drift, max(drift.natural, distance.statistic)))
        looks.compare(drift, reference, window)
    looks.run()
    assert [drift.natural for drift, _ in expected] == [natural for _, natural in expected]
