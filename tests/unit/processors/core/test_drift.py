"""Mean drift against a baseline, and binned KS / PSI agreeing with scipy and with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from llmpulse.processors.core.drift import (
    BinnedDistribution,
    MeanDrift,
    kolmogorov_sf,
    ks_statistic,
    linear_edges,
    log_edges,
    psi,
    psi_band,
    quantile_groups,
    quantile_psi,
    smoothed_psi,
)


def _binned(edges: np.ndarray, values: np.ndarray) -> BinnedDistribution:
    dist = BinnedDistribution(edges)
    dist.update(values)
    return dist


# ---------------------------------------------------------------- MeanDrift
def test_percent_change_against_first_n_baseline() -> None:
    drift = MeanDrift(baseline_size=1000, current_size=1000, min_current=30)
    drift.update(np.full(600, 100.0))
    assert math.isnan(drift.percent_change())  # baseline still filling
    drift.update(np.concatenate([np.full(400, 100.0), np.full(20, 115.0)]))
    assert drift.baseline_ready
    assert math.isnan(drift.percent_change())  # only 20 current observations, fewer than min_current
    drift.update(np.full(30, 115.0))
    assert drift.percent_change() == pytest.approx(15.0)


def test_current_window_is_the_latest_one_to_two_blocks() -> None:
    drift = MeanDrift(baseline_size=1000, current_size=1000)
    drift.update(np.full(1000, 100.0))
    drift.update(np.full(2000, 200.0))  # two full blocks: old news once newer blocks complete
    drift.update(np.full(1000, 110.0))
    assert drift.percent_change() == pytest.approx(10.0)
    drift.update(np.full(500, 130.0))
    # Last completed block (1000 x 110) plus the filling one (500 x 130).
    assert drift.percent_change() == pytest.approx(100 * ((1000 * 110 + 500 * 130) / 1500 - 100) / 100)
    assert drift.current.count == 1500


def test_drop_reads_as_negative_change_and_nan_is_skipped() -> None:
    drift = MeanDrift(baseline_size=10, current_size=100, min_current=5)
    drift.update(np.array([10.0] * 10 + [np.nan] * 5 + [8.0] * 10))
    assert drift.baseline.count == 10
    assert drift.percent_change() == pytest.approx(-20.0)


def test_baseline_statistics_match_numpy() -> None:
    values = np.random.default_rng(0).gamma(2.0, 300.0, 5000)
    drift = MeanDrift(baseline_size=3000, current_size=5000)
    for chunk in np.array_split(values, 17):
        drift.update(chunk)
    assert drift.baseline.mean == pytest.approx(values[:3000].mean(), rel=1e-12)
    assert drift.baseline.variance == pytest.approx(values[:3000].var(ddof=1), rel=1e-10)
    assert drift.current.mean == pytest.approx(values[3000:].mean(), rel=1e-12)


def test_reference_period_baseline() -> None:
    drift = MeanDrift(reference_end_ms=1_000, min_current=1)
    drift.update(np.array([50.0, 50.0, 60.0, 60.0]), np.array([10, 999, 1_000, 2_000]))
    assert drift.baseline.count == 2
    assert drift.percent_change() == pytest.approx(20.0)
    with pytest.raises(ValueError):
        drift.update(np.array([1.0]))


def test_rebaseline_adopts_the_current_window() -> None:
    drift = MeanDrift(baseline_size=100, current_size=100, min_current=10)
    drift.update(np.full(100, 100.0))
    drift.update(np.full(100, 150.0))
    assert drift.percent_change() == pytest.approx(50.0)
    drift.rebaseline()
    assert drift.baseline.mean == 150.0
    assert math.isnan(drift.percent_change())  # the current window starts over
    drift.update(np.full(20, 165.0))
    assert drift.percent_change() == pytest.approx(10.0)


def test_mean_drift_round_trips_through_bytes() -> None:
    drift = MeanDrift(baseline_size=50, current_size=40, min_current=3)
    drift.update(np.random.default_rng(1).normal(100, 10, 137))
    restored = MeanDrift.from_bytes(drift.to_bytes())
    assert restored.percent_change() == drift.percent_change()
    assert (restored.baseline, restored.current) == (drift.baseline, drift.current)
    with pytest.raises(ValueError):
        MeanDrift.from_bytes(b"short")


# ---------------------------------------------------------------- bins
def test_edge_helpers() -> None:
    np.testing.assert_allclose(log_edges(1, 1000, 3), [1, 10, 100, 1000])
    np.testing.assert_allclose(linear_edges(0, 1, 4), [0, 0.25, 0.5, 0.75, 1])
    with pytest.raises(ValueError):
        log_edges(0, 10, 5)
    with pytest.raises(ValueError):
        BinnedDistribution(np.array([1.0, 1.0, 2.0]))


def test_bins_are_left_closed_with_outer_bins() -> None:
    dist = _binned(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 1.5, 2.0, 3.0, np.inf, -np.inf, np.nan]))
    # bins: (-inf, 1), [1, 2), [2, 3), [3, inf)
    assert dist.counts.tolist() == [2, 2, 1, 2]
    assert dist.total == 7


def test_coarsen_equals_binning_on_the_coarse_edges() -> None:
    values = np.random.default_rng(2).lognormal(6, 1, 5000)
    fine = _binned(log_edges(1, 1e5, 300), values)
    for factor in (1, 7, 30, 299, 1000):
        coarse = fine.coarsen(factor)
        assert coarse.counts.tolist() == _binned(coarse.edges, values).counts.tolist()


def test_merge_and_round_trip() -> None:
    edges = linear_edges(0, 1, 20)
    a, b = np.random.default_rng(3).random((2, 400))
    merged = _binned(edges, a)
    merged.merge(_binned(edges, b))
    assert merged.counts.tolist() == _binned(edges, np.concatenate([a, b])).counts.tolist()
    restored = BinnedDistribution.from_bytes(merged.to_bytes())
    assert restored.counts.tolist() == merged.counts.tolist()
    np.testing.assert_array_equal(restored.edges, edges)
    with pytest.raises(ValueError):
        merged.merge(BinnedDistribution(linear_edges(0, 1, 10)))


# ---------------------------------------------------------------- KS
@pytest.mark.parametrize("lam", [0.02, 0.2, 0.5, 0.9, 1.17, 1.19, 1.5, 2.0, 3.0])
def test_kolmogorov_survival_matches_scipy(lam: float) -> None:
    assert kolmogorov_sf(lam) == pytest.approx(stats.kstwobign.sf(lam), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "seed"),
    [
        (2000, 3000, 0.0, 1),
        (2000, 3000, 0.05, 2),
        (5000, 5000, 0.1, 3),
        (500, 800, 0.2, 4),
        (60, 80, 0.0, 5),
        (60, 80, 0.8, 6),
        (20_000, 20_000, 0.02, 7),
    ],
)
def test_binned_ks_agrees_with_scipy(n1: int, n2: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = rng.lognormal(6.0, 1.0, n1), rng.lognormal(6.0 + shift, 1.0, n2)
    edges = log_edges(1.0, 1e5, 300)
    ours = ks_statistic(_binned(edges, ref), _binned(edges, cur))
    theirs = stats.ks_2samp(ref, cur)
    assert abs(ours.statistic - theirs.statistic) < 0.02
    assert (ours.p_value < 0.05) == (theirs.pvalue < 0.05)
    assert abs(math.log10(ours.p_value) - math.log10(theirs.pvalue)) < 1.0  # same order of magnitude


def test_ks_of_identical_and_empty_distributions() -> None:
    edges = linear_edges(0, 1, 10)
    same = _binned(edges, np.linspace(0, 1, 100))
    assert ks_statistic(same, same.copy()) == (0.0, 1.0)
    assert all(math.isnan(x) for x in ks_statistic(same, BinnedDistribution(edges)))


# ---------------------------------------------------------------- PSI
def test_psi_hand_computed_example() -> None:
    # Reference 25/25/25/25, current 10/20/30/40 calls over four bins; half a call is added to every bin
    # (Jeffreys), so e = 25.5/102 = 0.25 and a = 10.5/102, 20.5/102, 30.5/102, 40.5/102.
    # PSI = sum((a - e) * ln(a / e)):
    #   (0.102941 - 0.25) ln(0.411765) = 0.130486
    #   (0.200980 - 0.25) ln(0.803922) = 0.010698
    #   (0.299020 - 0.25) ln(1.196078) = 0.008778
    #   (0.397059 - 0.25) ln(1.588235) = 0.068033
    #   total                          = 0.217995 -> "significant" (>= 0.2)
    edges = np.array([1.0, 2.0, 3.0])
    ref = _binned(edges, np.repeat([0.5, 1.5, 2.5, 3.5], 25))
    cur = _binned(edges, np.repeat([0.5, 1.5, 2.5, 3.5], [10, 20, 30, 40]))
    value = psi(ref, cur)
    assert value == pytest.approx(0.217995, abs=1e-6)
    assert psi_band(value) == "significant"


def test_empty_bins_are_smoothed_not_floored() -> None:
    # All mass swaps bins: with half a count added, a = (0.5, 10.5) / 11 and e the reverse:
    # PSI = 2 (10/11) ln(21) = 5.5353, where a 1e-4 floor gave 2 (1 - 1e-4) ln(1e4) = 18.4.
    edges = np.array([1.0])
    ref = _binned(edges, np.zeros(10))
    cur = _binned(edges, np.full(10, 5.0))
    assert psi(ref, cur) == pytest.approx(2 * 10 / 11 * math.log(21), rel=1e-12)
    # 5 of 100 current values in a bin the reference (500 values) left empty: a floor made it 0.31 on its own
    reference, current = np.array([250, 250, 0]), np.array([48, 47, 5])
    floored = np.maximum(current / 100, 1e-4), np.maximum(reference / 500, 1e-4)
    assert np.sum((floored[0] - floored[1]) * np.log(floored[0] / floored[1])) > 0.3
    assert smoothed_psi(reference, current) == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ValueError):
        smoothed_psi(reference, current, smoothing=0.0)


def test_quantile_groups_hold_equal_reference_mass_and_never_an_empty_one() -> None:
    rng = np.random.default_rng(11)
    fine = _binned(log_edges(0.01, 600.0, 100), rng.lognormal(0.0, 0.7, 4000)).counts
    starts = quantile_groups(fine, 10)
    shares = np.add.reduceat(fine, starts) / fine.sum()
    assert len(shares) == 10 and shares.min() > 0.06 and shares.max() < 0.14
    assert np.add.reduceat(fine, starts)[-1] > 0 and fine[: starts[1]].sum() > 0
    # a point mass (a third of the reference in one bin) is one group, not three empty-edged ones
    lumpy = np.array([0, 10, 0, 0, 300, 0, 390, 200, 0, 0])
    groups = np.add.reduceat(lumpy, quantile_groups(lumpy, 10))
    assert (groups > 0).all() and groups.sum() == lumpy.sum() and len(groups) <= 4
    assert quantile_groups(np.zeros(5), 10).tolist() == [0]


def test_quantile_psi_ignores_values_past_the_reference_range_but_not_a_real_shift() -> None:
    rng = np.random.default_rng(12)
    edges = log_edges(0.01, 600.0, 100)
    reference = _binned(edges, rng.lognormal(0.0, 0.5, 500)).counts
    current = rng.lognormal(0.0, 0.5, 100)
    outliers = current.copy()
    outliers[:5] = 300.0  # 5 % far past the reference's slowest value: they join its top group
    with_them, without = (quantile_psi(reference, _binned(edges, v).counts) for v in (outliers, current))
    added = with_them - without
    assert added < 0.05  # (a 1e-4 floor on a bin of their own made 0.31 of them)
    slower = _binned(edges, 1.5 * rng.lognormal(0.0, 0.5, 500)).counts
    assert quantile_psi(reference, slower) > 0.4
    # a small window is cut into fewer groups so that each expects at least min_expected values
    few = _binned(edges, rng.lognormal(0.0, 0.5, 20)).counts
    assert quantile_psi(reference, few, bins=10, min_expected=5) == smoothed_psi(
        *(np.add.reduceat(c, quantile_groups(reference, 4)) for c in (reference, few)))


def test_psi_of_same_population_is_stable_on_coarse_bins() -> None:
    rng = np.random.default_rng(8)
    fine = log_edges(1.0, 1e5, 300)
    ref, same, shifted = (_binned(fine, rng.lognormal(m, 1.0, 5000)) for m in (6.0, 6.0, 6.5))
    assert psi(ref, ref.copy()) == 0.0
    assert psi_band(psi(ref.coarsen(30), same.coarsen(30))) == "stable"
    assert psi_band(psi(ref.coarsen(30), shifted.coarsen(30))) == "significant"


@pytest.mark.parametrize(
    ("value", "band"),
    [(0.0, "stable"), (0.099, "stable"), (0.1, "moderate"), (0.199, "moderate"), (0.2, "significant"),
     (3.0, "significant"), (math.nan, "stable")],
)
def test_psi_bands(value: float, band: str) -> None:
    assert psi_band(value) == band


def test_the_recent_window_sees_a_shift_end_while_the_current_window_still_holds_it() -> None:
    drift = MeanDrift(baseline_size=200, current_size=500, min_current=100, recent_size=50)
    rng = np.random.default_rng(4)
    drift.update(rng.normal(0.8, 0.05, 200))  # baseline 0.8
    drift.update(rng.normal(0.56, 0.05, 600))  # a 30 % drop
    assert drift.percent_change() < -25 and drift.recent_percent_change() < -25
    drift.update(rng.normal(0.8, 0.05, 100))  # recovered: the latest 100 are back
    assert drift.percent_change() < -10  # the 500-1000 call window still reads a drop
    assert abs(drift.recent_percent_change()) < 5
    restored = MeanDrift.from_bytes(drift.to_bytes())
    assert restored.recent_percent_change() == drift.recent_percent_change()
    assert math.isnan(MeanDrift(baseline_size=2).recent_percent_change())  # no recent window: no opinion
