"""When a count over a threshold is more than sampling noise: the binomial tail both rate rules share.

A rule such as "p99 above 5 s" or "error rate at least 5 %" judged on a window of n calls sees, by chance alone,
about n x tail calls over the line even when the true percentile or rate sits exactly on it. A breach is
called only when more calls are over the line than a series sitting on the threshold shows with probability
``alpha``: a 30 s window of 60 calls with one timeout is not an incident, every call failing is.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist


@lru_cache(maxsize=8192)
def breaching_calls_needed(n: int, tail: float, alpha: float, floor: int) -> int:
    """Smallest k with P(Binomial(n, tail) >= k) < alpha, at least ``floor``: how many of n calls must be over
    the threshold of the (1 - tail) percentile before a breach is more than sampling noise."""
    mean = n * tail
    if mean > 30:  # normal approximation, with continuity correction
        z = NormalDist().inv_cdf(1.0 - alpha)
        return max(floor, math.ceil(mean + z * math.sqrt(mean * (1.0 - tail)) + 0.5))
    pmf = (1.0 - tail) ** n
    below = pmf  # P(X <= k - 1) for k = 1
    k = 1
    while 1.0 - below >= alpha and k <= n:
        pmf *= (n - k + 1) / k * tail / (1.0 - tail)
        below += pmf
        k += 1
    return max(floor, k)
