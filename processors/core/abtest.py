"""Streaming mean/variance and the two-sample statistics an A/B comparison needs, without scipy at runtime.

``Welford`` keeps (count, mean, M2) and merges batches with Chan et al.'s parallel formula, so a numpy batch
costs one vectorised pass. ``welch_t_test`` gives Welch's unequal-variance t statistic, the
Welch-Satterthwaite degrees of freedom and a two-sided p-value from the Student t distribution (through the
regularized incomplete beta function). Sign convention follows scipy.stats.ttest_ind(a, b): positive t
means a's mean is higher.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np

_WELFORD = struct.Struct("<qdd")
_BETA_MAX_ITERATIONS = 300
_BETA_EPS = 1e-15
_TINY = 1e-300


class Welford:
    """Running count, mean and sum of squared deviations (M2) of a stream of floats; NaN is skipped."""

    __slots__ = ("count", "m2", "mean")

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.count = count
        self.mean = mean
        self.m2 = m2

    def __repr__(self) -> str:
        return f"Welford(count={self.count}, mean={self.mean!r}, m2={self.m2!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Welford):
            return NotImplemented
        return (self.count, self.mean, self.m2) == (other.count, other.mean, other.m2)

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); NaN below two observations."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.count > 1 else math.nan

    def add(self, value: float) -> None:
        """One value (NaN skipped): ``update`` of a one-value batch, bit for bit, without numpy (a series touched by
        one call per batch is the usual case at many series)."""
        if value == value:
            self._combine(1, value, 0.0 if math.isfinite(value) else math.nan)  # its M2 as d @ d gives it

    def update(self, values: np.ndarray) -> None:
        """Fold in a batch: its own mean and M2 in one numpy pass, then Chan's merge."""
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size:
            batch_mean = float(v.mean())
            d = v - batch_mean
            self._combine(int(v.size), batch_mean, float(d @ d))

    def merge(self, other: Welford) -> None:
        self._combine(other.count, other.mean, other.m2)

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        if n_b == 0:
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.count = n

    def copy(self) -> Welford:
        return Welford(self.count, self.mean, self.m2)

    def to_bytes(self) -> bytes:
        return _WELFORD.pack(self.count, self.mean, self.m2)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, offset: int = 0) -> Welford:
        return cls(*_WELFORD.unpack_from(buf, offset))


class WelchResult(NamedTuple):
    t: float
    dof: float
    p_value: float


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function, evaluated with the modified Lentz method."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _BETA_MAX_ITERATIONS + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = c * d
            result *= step
        if abs(step - 1.0) < _BETA_EPS:
            break
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast only on one side of the mean a / (a + b); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` degrees of freedom."""
    if math.isnan(t) or math.isnan(dof) or dof <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def welch_t_test(a: Welford, b: Welford) -> WelchResult:
    """Welch's t-test of mean(a) == mean(b); NaN everywhere when either side has < 2 values or both are
    constant with equal means."""
    if a.count < 2 or b.count < 2:
        return WelchResult(math.nan, math.nan, math.nan)
    va, vb = a.variance / a.count, b.variance / b.count
    se2 = va + vb
    diff = a.mean - b.mean
    if se2 == 0.0:
        if diff == 0.0:
            return WelchResult(math.nan, math.nan, math.nan)
        return WelchResult(math.copysign(math.inf, diff), math.nan, 0.0)
    t = diff / math.sqrt(se2)
    dof = se2 * se2 / (va * va / (a.count - 1) + vb * vb / (b.count - 1))
    return WelchResult(t, dof, student_t_two_sided_p(t, dof))


def cohens_d(a: Welford, b: Welford) -> float:
    """(mean(a) - mean(b)) / pooled sample standard deviation; NaN when undefined."""
    dof = a.count + b.count - 2
    if a.count < 2 or b.count < 2 or dof <= 0:
        return math.nan
    pooled = math.sqrt((a.m2 + b.m2) / dof)
    if pooled == 0.0:
        return math.nan
    return (a.mean - b.mean) / pooled
