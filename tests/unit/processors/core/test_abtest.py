"""Welford batches and Welch's t-test agree with numpy and scipy; Cohen's d matches a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from llmpulse.processors.core.abtest import (
    Welford,
    cohens_d,
    regularized_incomplete_beta,
    student_t_two_sided_p,
    welch_t_test,
)


def _welford(values: np.ndarray, batches: int = 1) -> Welford:
    w = Welford()
    for chunk in np.array_split(values, batches):
        w.update(chunk)
    return w


@pytest.mark.parametrize("batches", [1, 3, 50])
@pytest.mark.parametrize("offset", [0.0, 1e9])  # large offset: the naive sum-of-squares formula breaks here
def test_batched_welford_matches_numpy(batches: int, offset: float) -> None:
    values = offset + np.random.default_rng(batches).normal(0.0, 3.0, 10_001)
    w = _welford(values, batches)
    assert w.count == values.size
    assert w.mean == pytest.approx(values.mean(), rel=1e-13)
    assert w.variance == pytest.approx(np.var(values, ddof=1), rel=1e-9)


def test_merge_of_parts_equals_whole() -> None:
    rng = np.random.default_rng(4)
    parts = [rng.exponential(s, n) for s, n in ((1.0, 10), (5.0, 1000), (0.1, 3))]
    merged = Welford()
    for p in parts:
        merged.merge(_welford(p))
    whole = np.concatenate(parts)
    assert merged.mean == pytest.approx(whole.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(whole.var(ddof=1), rel=1e-12)


def test_single_adds_nan_and_round_trip() -> None:
    w = Welford()
    for x in (2.0, 4.0, math.nan, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0):
        w.add(x)
    assert (w.count, w.mean) == (8, 5.0)
    assert w.variance == pytest.approx(32.0 / 7.0)
    assert Welford.from_bytes(w.to_bytes()) == w
    assert math.isnan(Welford(1, 3.0, 0.0).variance)


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "scale", "seed"),
    [(5, 7, 0.5, 1.0, 0), (30, 40, 0.1, 2.0, 1), (1000, 800, 0.05, 1.0, 2), (20, 3000, 1.0, 3.0, 3),
     (2, 2, 1.0, 1.0, 4), (50_000, 50_000, 0.01, 1.0, 5)],
)
def test_welch_matches_scipy(n1: int, n2: int, shift: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.0, 1.0, n1), rng.normal(shift, scale, n2)
    ours = welch_t_test(_welford(a), _welford(b, 4))
    theirs = stats.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.dof == pytest.approx(theirs.df, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-8, abs=1e-14)


def test_welch_degenerate_inputs() -> None:
    assert all(math.isnan(x) for x in welch_t_test(_welford(np.array([1.0])), _welford(np.ones(5))))
    assert all(math.isnan(x) for x in welch_t_test(_welford(np.ones(5)), _welford(np.ones(5))))
    t, _, p = welch_t_test(_welford(np.full(5, 2.0)), _welford(np.ones(5)))
    assert t == math.inf and p == 0.0


def test_incomplete_beta_and_t_tail_match_scipy() -> None:
    rng = np.random.default_rng(6)
    for a, b, x in zip(rng.uniform(0.05, 500, 300), rng.uniform(0.05, 50, 300), rng.random(300), strict=True):
        assert regularized_incomplete_beta(a, b, x) == pytest.approx(special.betainc(a, b, x), abs=1e-12)
    for t, dof in ((0.0, 3.0), (1.96, 1e6), (2.5, 4.5), (-10.0, 30.0), (40.0, 2.0)):
        assert student_t_two_sided_p(t, dof) == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)


def test_cohens_d_hand_example() -> None:
    # a = 1..5 (mean 3, var 2.5), b = 3..7 (mean 5, var 2.5): pooled sd = sqrt(2.5) = 1.5811,
    # d = (3 - 5) / 1.5811 = -1.2649.
    d = cohens_d(_welford(np.arange(1.0, 6.0)), _welford(np.arange(3.0, 8.0)))
    assert d == pytest.approx(-2.0 / math.sqrt(2.5))
    assert d == pytest.approx(-1.2649, abs=1e-4)


def test_cohens_d_pools_by_degrees_of_freedom() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 3.0, 400)
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    assert cohens_d(_welford(a), _welford(b)) == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-12)
    assert math.isnan(cohens_d(_welford(np.ones(3)), _welford(np.ones(3))))
