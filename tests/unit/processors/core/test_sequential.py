"""The always-valid test keeps its false-positive rate under continuous looks; experiments report winners."""

from __future__ import annotations

import numpy as np

from bench.ab_sequential import run
from bench.common import QUICK
from llmpulse.processors.core.abtest import Welford
from llmpulse.processors.core.experiments import ExperimentConfig, ExperimentMonitor
from llmpulse.processors.core.sequential import msprt


def test_aa_false_positive_rate_stays_under_alpha_where_repeated_welch_does_not() -> None:
    figures = run(QUICK, seed=5).figures
    assert figures["ab_aa_false_positive_rate"] <= 0.05
    assert figures["ab_aa_false_positive_rate_repeated_welch"] > 0.15
    assert figures["ab_power_quality_8_6pct"] >= 0.8


def test_identical_arms_are_not_significant_and_a_large_gap_is() -> None:
    rng = np.random.default_rng(1)
    a, b = Welford(), Welford()
    a.update(rng.normal(0.6, 0.2, 500))
    b.update(rng.normal(0.6, 0.2, 500))
    same = msprt(b, a, 0.05)
    assert same is not None and same.p_value > 0.05 and same.lower < 0 < same.upper
    b.update(rng.normal(0.9, 0.2, 500))
    better = msprt(b, a, 0.05)
    assert better is not None and better.p_value < 0.001 and better.lower > 0


def test_quality_improvement_raises_improvement_and_winner_events() -> None:
    monitor = ExperimentMonitor(ExperimentConfig())
    rng = np.random.default_rng(2)
    n = 600
    variant = np.array(["control", "treatment"] * n, dtype=object)
    quality = np.where(variant == "treatment", rng.normal(0.7, 0.25, 2 * n), rng.normal(0.62, 0.3, 2 * n))
    monitor.update(np.full(2 * n, "prompt-v2", dtype=object), variant, {"quality": quality}, offset=0)
    rules = {(o.rule, o.severity) for o in monitor.observe("prompt-v2", 0)}
    assert ("ab_improvement", "INFO") in rules and ("ab_winner", "INFO") in rules
    assert ("ab_regression", None) in rules
