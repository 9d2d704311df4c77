"""The partition engine: decisions from a batch, replay idempotence, restore from persisted state."""

from __future__ import annotations

import time

import numpy as np
import pytest

from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guarding import GuardingConfig, GuardMonitor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.decode import CallDecoder
from llmpulse.producers.batching import BatchEncoder

NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def shared() -> tuple[Pricer, GuardMonitor]:
    return Pricer(), GuardMonitor(GuardingConfig())


def _engine(shared: tuple[Pricer, GuardMonitor]) -> PartitionEngine:
    return PartitionEngine(0, EngineConfig(), *shared)


def _calls(n: int, seed: int = 0, **overrides: object):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {
            "event_id": f"{seed}-{i}", "timestamp_ms": NOW - 1000, "service": "checkout", "provider": "openai",
            "request_model": "gpt-4o", "status": "ok", "latency_ms": float(rng.lognormal(6.0, 0.4)),
            "input_tokens": 200, "output_tokens": 100, "user_hash": f"user-{i % 7}", "confidence": 0.8,
        }
        row.update(overrides)
        rows.append(row)
    data = BatchEncoder("test").encode_batch(rows)
    calls, refused = CallDecoder(Limits(), 1 << 24, 10_000).decode(data, NOW)
    assert not refused and calls is not None
    return calls


def test_slow_batch_fires_p95_and_p99_once_and_replay_changes_nothing(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    slow = _calls(100, latency_ms=6000.0)
    first = engine.process(slow, offset=10, now_ms=NOW)
    rules = sorted((a.rule, a.severity) for a in first.alerts)
    assert rules == [("latency_p95", "WARNING"), ("latency_p99", "CRITICAL")]

    again = engine.process(slow, offset=11, now_ms=NOW)
    assert again.alerts == []  # still firing: no second event
    count_before = engine.latency.quantiles("checkout\x1fgpt-4o\x1fopenai", 60, NOW)[0]
    replay = engine.process(slow, offset=11, now_ms=NOW)
    assert replay.alerts == []
    assert engine.latency.quantiles("checkout\x1fgpt-4o\x1fopenai", 60, NOW)[0] == count_before == 200


def test_restored_engine_continues_exactly_where_the_persisted_one_stopped(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    engine.process(_calls(50, seed=1, cost_micros=1000), offset=1, now_ms=NOW)
    engine.process(_calls(50, seed=2, cost_micros=1000), offset=2, now_ms=NOW)
    saved = engine.drain_state()
    restored = _engine(shared)
    for key, blob in saved:
        assert blob is not None
        restored.restore(key, blob)

    # offset 2 is replayed after the crash, offset 3 is new: only offset 3 may count
    restored.process(_calls(50, seed=2, cost_micros=1000), offset=2, now_ms=NOW)
    restored.process(_calls(50, seed=3, cost_micros=1000), offset=3, now_ms=NOW)

    series = "checkout\x1fgpt-4o\x1fopenai"
    assert restored.traffic.totals(series, 300, NOW)["requests"] == 150
    assert restored.traffic.totals(series, 300, NOW)["cost_micros"] == 150 * 1000
    hour = restored.budget.spent("service", "checkout", "hour", NOW)
    assert hour == 150 * 1000


def test_error_burst_is_critical_with_its_breakdown(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    engine.process(_calls(80), offset=1, now_ms=NOW)
    outcome = engine.process(_calls(20, seed=5, status="rate_limited", error_type="RateLimitError"), 2, NOW)
    error = [a for a in outcome.alerts if a.rule == "error_rate"]
    assert len(error) == 1 and error[0].severity == "CRITICAL"
    assert error[0].observed == pytest.approx(0.2)
    assert "20 rate-limited" in error[0].summary


def test_unknown_model_is_counted_not_priced_at_zero(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    outcome = engine.process(_calls(10, request_model="in-house-llm-7b"), offset=1, now_ms=NOW)
    assert outcome.unpriced_models == {"in-house-llm-7b": 10}
    assert sum(t.cost_micros for t in outcome.totals) == 0


def test_quiet_series_resolves_after_the_hold(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    engine.process(_calls(60, latency_ms=3000.0), offset=1, now_ms=NOW)
    hold = engine.config.alerts.resolve_hold_ms
    assert engine.tick(NOW + 61_000) == []  # the window emptied: clear, hold starts
    resolved = engine.tick(NOW + 61_000 + hold)
    assert {(a.rule, a.status) for a in resolved} == {("latency_p95", "resolved")}


def test_the_cursor_is_persisted_last_so_a_persisted_cursor_implies_its_state(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    engine.process(_calls(20, cost_micros=1000), offset=5, now_ms=NOW)
    engine.cursor.advance(5)
    saved = engine.drain_state()
    assert saved[-1][0] == "cursor/next" and len(saved) > 1
    restored = _engine(shared)
    for key, blob in saved:
        assert blob is not None
        restored.restore(key, blob)
    assert restored.cursor.covers(5) and not restored.cursor.covers(6)
    assert engine.drain_state() == []  # nothing moved since
