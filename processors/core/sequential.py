"""Always-valid A/B decisions: a mixture sequential probability ratio test (mSPRT) on a difference of means.

Re-running a fixed-sample test (Welch) after every batch finds "significant" differences between identical
arms far more often than alpha: with looks after every batch its false-positive rate grows without bound.
The mSPRT of Johari, Pekelis and Walsh ("Always valid inference", 2017, the normal-mixture form used by
Optimizely and others) compares H0: delta = 0 with a N(0, tau^2) mixture over alternatives. With the
difference of arm means ``d`` and its variance ``V = s_b^2/n_b + s_a^2/n_a`` (Welford moments, abtest.py):

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

Lambda is a martingale under H0 (asymptotically, by the CLT on the arm means), so by Ville's inequality
``P(sup_n Lambda_n >= 1/alpha) <= alpha``: looking after every batch, for ever, keeps the false-positive rate
at most alpha. The always-valid p-value is the running minimum of ``1 / Lambda`` (callers keep it, it never
goes up) and the matching confidence sequence is ``d +- sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V)
- 2 log alpha))``. ``tau`` is the effect size the test is most sensitive to, in units of the pooled standard
deviation (``mixture_sd``): any tau keeps the guarantee, only power moves. Measured on replays
(bench/ab_sequential.py): the A/A false-positive rate and the power on seed 003's +8.6% quality example are in
bench/results/latest.json.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from llmpulse.processors.core.abtest import Welford

MIXTURE_SD = 0.25  # tau in pooled standard deviations


class SequentialTest(NamedTuple):
    difference: float  # variant mean - control mean
    log_lambda: float
    p_value: float  # 1 / Lambda at this look (callers keep the running minimum)
    lower: float  # always-valid confidence sequence for the difference at the given alpha
    upper: float


def log_lambda(difference: np.ndarray | float, variance: np.ndarray | float,
               tau2: np.ndarray | float) -> np.ndarray:
    """log of the normal-mixture likelihood ratio; vectorised over arrays of looks or replays."""
    d, v, t = (np.asarray(x, dtype=np.float64) for x in (difference, variance, tau2))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 0.5 * np.log(v / (v + t)) + t * d * d / (2.0 * v * (v + t))
    return np.where((v > 0) & np.isfinite(out), out, 0.0)


def half_width(variance: np.ndarray | float, tau2: np.ndarray | float, alpha: float) -> np.ndarray:
    v, t = np.asarray(variance, dtype=np.float64), np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(v * (v + t) / t * (np.log((v + t) / v) - 2.0 * np.log(alpha)))
    return np.where(v > 0, out, np.inf)


def msprt(variant: Welford, control: Welford, alpha: float, mixture_sd: float = MIXTURE_SD) -> SequentialTest | None:
    """The test at this look, or None before both arms have two observations and some variance."""
    if min(variant.count, control.count) < 2:
        return None
    variance = variant.variance / variant.count + control.variance / control.count
    pooled = (variant.m2 + control.m2) / (variant.count + control.count - 2)
    if not variance > 0 or not pooled > 0:
        return None
    tau2 = (mixture_sd * mixture_sd) * pooled
    difference = variant.mean - control.mean
    log_l = float(log_lambda(difference, variance, tau2))
    width = float(half_width(variance, tau2, alpha))
    return SequentialTest(difference, log_l, float(min(1.0, np.exp(-log_l))), difference - width,
                          difference + width)
