"""Latency rules judge percentiles, but never on a single slow call."""

from __future__ import annotations

import numpy as np
import pytest

from llmpulse.processors.core.latency import LatencyConfig, LatencyMonitor, breaching_calls_needed
from llmpulse.processors.core.slots import series_key

NOW = 1_700_000_000_000
SERIES = series_key(("chat", "gpt-4o", "openai"))


def _severities(latencies_ms: list[float]) -> dict[str, str | None]:
    monitor = LatencyMonitor(LatencyConfig())
    n = len(latencies_ms)
    monitor.update([SERIES], np.zeros(n, dtype=np.int64), np.full(n, NOW - 1000, dtype=np.int64),
                   np.array(latencies_ms), np.full(n, np.nan), offset=0, now_ms=NOW)
    return {o.rule: o.severity for o in monitor.observe(SERIES, NOW)}


def test_one_timeout_among_sixty_calls_is_not_a_latency_incident() -> None:
    assert _severities([400.0] * 59 + [30_000.0]) == {"latency_p95": None, "latency_p99": None}


def test_a_percentile_breaches_only_beyond_what_chance_gives_at_the_threshold() -> None:
    # 60 calls: by chance up to 4 may sit above a true p99 and up to 9 above a true p95 (binomial, alpha 0.001)
    assert _severities([400.0] * 56 + [30_000.0] * 4) == {"latency_p95": None, "latency_p99": None}
    assert _severities([400.0] * 55 + [30_000.0] * 5) == {"latency_p95": None, "latency_p99": "CRITICAL"}
    assert _severities([400.0] * 50 + [30_000.0] * 10) == {"latency_p95": "WARNING", "latency_p99": "CRITICAL"}
    assert _severities([400.0] * 40 + [2_500.0] * 20) == {"latency_p95": "WARNING", "latency_p99": None}
    assert _severities([3_000.0] * 60) == {"latency_p95": "WARNING", "latency_p99": None}  # a spike: every call


def test_breaching_calls_needed_follows_the_binomial_tail() -> None:
    assert breaching_calls_needed(20, 0.01, 0.001, 3) == 4  # P(X >= 3) = 0.0010 is not below alpha
    assert breaching_calls_needed(60, 0.01, 0.001, 3) == 5
    assert breaching_calls_needed(100_000, 0.01, 0.001, 3) == pytest.approx(1000 + 3.09 * 31.46, abs=2)
