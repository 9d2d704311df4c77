"""Honest A/B: the always-valid test's false-positive rate on A/A replays and its power on seed 003's example.

Each replay streams two arms and looks after every ``look_every`` samples per arm from ``min_samples`` on
(as the worker does after every record); the test rejects at the first look where the mSPRT's Lambda reaches
1/alpha (processors/core/sequential.py, the same function the worker uses). Arms are seed 003's quality scores:
A/A both N(3.5, 1.2) clipped to 0..5; the power run's treatment is N(3.8, 1.1) clipped, +8.6%. For contrast
the A/A run also reports the false-positive rate of a two-sided z/Welch test at alpha re-run at every look, the
practice this test replaces. All replays are numpy arrays (replays x looks); seeded, so reruns match.
"""

from __future__ import annotations

import numpy as np

from bench.common import FULL, GroupResult, Scale
from llmpulse.processors.core.experiments import ExperimentConfig
from llmpulse.processors.core.sequential import log_lambda

FIGURES = ("ab_aa_false_positive_rate", "ab_power_quality_8_6pct", "ab_aa_false_positive_rate_repeated_welch",
           "ab_power_median_samples_per_arm")
ALPHA = 0.05
PER_ARM = 1000
LOOK_EVERY = 10


def _arm(rng: np.random.Generator, replays: int, mean: float, sd: float) -> np.ndarray:
    return np.clip(rng.normal(mean, sd, (replays, PER_ARM)), 0.0, 5.0)


def _looks(control: np.ndarray, variant: np.ndarray, min_samples: int, mixture_sd: float) -> tuple[np.ndarray, ...]:
    """(log Lambda, z, difference) at every look, shape (replays, looks)."""
    n = np.arange(LOOK_EVERY, PER_ARM + 1, LOOK_EVERY)
    n = n[n >= min_samples]

    def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, q = np.cumsum(x, axis=1)[:, n - 1], np.cumsum(x * x, axis=1)[:, n - 1]
        mean = s / n
        return mean, (q - n * mean * mean) / (n - 1)

    (ma, va), (mb, vb) = moments(control), moments(variant)
    variance = va / n + vb / n
    tau2 = mixture_sd ** 2 * (va + vb) / 2.0
    difference = mb - ma
    return log_lambda(difference, variance, tau2), difference / np.sqrt(variance), difference


def run(scale: Scale, seed: int = 86) -> GroupResult:
    replays = 2000 if scale.name == FULL.name else 500
    config = ExperimentConfig()
    rng = np.random.default_rng(seed)
    threshold = np.log(1.0 / ALPHA)
    result = GroupResult()

    log_l, z, _ = _looks(_arm(rng, replays, 3.5, 1.2), _arm(rng, replays, 3.5, 1.2), config.min_samples,
                         config.mixture_sd)
    fpr = float((log_l >= threshold).any(axis=1).mean())
    result.put("ab_aa_false_positive_rate", fpr,
               f"mSPRT (tau {config.mixture_sd} sd) at alpha {ALPHA}, {replays} A/A replays of {PER_ARM} per arm, "
               f"a look every {LOOK_EVERY} per arm from {config.min_samples}")
    result.put("ab_aa_false_positive_rate_repeated_welch", float((np.abs(z) >= 1.959964).any(axis=1).mean()),
               "the same replays judged by a fixed-sample test at alpha re-run at every look (what this replaces)")

    log_l, _, difference = _looks(_arm(rng, replays, 3.5, 1.2), _arm(rng, replays, 3.8, 1.1), config.min_samples,
                                  config.mixture_sd)
    crossed = (log_l >= threshold) & (difference > 0)
    found = crossed.any(axis=1)
    result.put("ab_power_quality_8_6pct", float(found.mean()),
               f"seed 003: quality 3.5 -> 3.8 (+8.6%), up to {PER_ARM} per arm, the same looks; "
               f"decided for the better arm")
    first = np.argmax(crossed, axis=1)[found]
    starts = max(config.min_samples, LOOK_EVERY) // LOOK_EVERY * LOOK_EVERY
    median = float(np.median(starts + first * LOOK_EVERY)) if found.any() else None
    result.put("ab_power_median_samples_per_arm", median, "samples per arm at the decision, when the test decided")
    return result
