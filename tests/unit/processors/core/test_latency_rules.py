"""Latency rules judge percentiles, but never on a single slow call."""

from __future__ import annotations

import numpy as np

from llmpulse.processors.core.latency import LatencyConfig, LatencyMonitor
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


def test_three_slow_calls_make_p99_critical_and_a_slow_tail_makes_p95_warn() -> None:
    assert _severities([400.0] * 57 + [30_000.0] * 3) == {"latency_p95": None, "latency_p99": "CRITICAL"}
    assert _severities([400.0] * 56 + [30_000.0] * 4) == {"latency_p95": "WARNING", "latency_p99": "CRITICAL"}
    assert _severities([400.0] * 40 + [2_500.0] * 20) == {"latency_p95": "WARNING", "latency_p99": None}
