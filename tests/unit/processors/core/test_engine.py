"""The partition engine: decisions from a batch, replay idempotence, restore from persisted state."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest

from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.core.ledger import BudgetLimits, PeriodLimits
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder
from tests.support.calls import decoded

NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def shared() -> tuple[Pricer, GuardMonitor]:
    return Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model())


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
    engine.process(_calls(70), offset=1, now_ms=NOW)
    outcome = engine.process(_calls(30, seed=5, status="rate_limited", error_type="RateLimitError"), 2, NOW)
    error = [a for a in outcome.alerts if a.rule == "error_rate"]
    assert len(error) == 1 and error[0].severity == "CRITICAL"
    assert error[0].observed == pytest.approx(0.3)
    assert "30 rate-limited" in error[0].summary


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


# Written under budget/ledger by the engine before buckets were persisted apart (offset 7 || whole-ledger JSON),
# after two records (offsets 6, 7) at 12:00 UTC: checkout spent 9,000 of its 10,000 day limit, 80 % and 90 %
# reported (level 2); users alice 8,500 and bob 500 (users were tracked per partition then; the fleet does now).
WHOLE_LEDGER_BLOB = (
    b'\x07\x00\x00\x00\x00\x00\x00\x00{"buckets":{"hour":[{"start_ms":1741608000000,"spend":{"global":{},"service":'
    b'{"checkout":[9000,0]},"user":{"alice":[8500,0],"bob":[500,0]},"model":{}}}],"day":[{"start_ms":1741564800000,'
    b'"spend":{"global":{},"service":{"checkout":[9000,2]},"user":{"alice":[8500,0],"bob":[500,0]},"model":{}}}],'
    b'"month":[{"start_ms":1740787200000,"spend":{"global":{},"service":{"checkout":[9000,0]},"user":{"alice":'
    b'[8500,0],"bob":[500,0]},"model":{}}}]},"projection_alerted_month":-1,"late_dropped":0}'
)
AT = int(datetime(2025, 3, 10, 12, 0, 5, tzinfo=UTC).timestamp() * 1000)
SERVICE_DAY_LIMIT = EngineConfig(limits=BudgetLimits(per_request_micros=None,
                                                     service_limits=PeriodLimits(day=10_000)))


def _priced(costs: list[int], users: list[str | None], at: int = AT):  # type: ignore[no-untyped-def]
    rows = [{"event_id": f"{at}-{i}", "timestamp_ms": at + i, "service": "checkout", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 300.0, "input_tokens": 10, "output_tokens": 10,
             "user_hash": user, "cost_micros": cost} for i, (cost, user) in enumerate(zip(costs, users, strict=True))]
    return decoded(rows, at + 1000)


def test_a_ledger_persisted_whole_by_the_previous_version_restores_then_moves_to_buckets(shared) -> None:  # type: ignore[no-untyped-def]
    engine = PartitionEngine(0, SERVICE_DAY_LIMIT, *shared)
    engine.restore("budget/ledger", WHOLE_LEDGER_BLOB)
    assert engine.budget.spent("service", "checkout", "day", AT) == 9000
    assert engine.budget.spent("service", "checkout", "month", AT) == 9000
    engine.process(_priced([5000], ["alice"], AT + 60_000), offset=7, now_ms=AT + 61_000)  # a replay: no change
    assert engine.budget.spent("service", "checkout", "day", AT) == 9000
    quiet = engine.process(_priced([50], ["alice"], AT + 120_000), offset=8, now_ms=AT + 121_000)
    assert [a for a in quiet.alerts if a.rule == "budget"] == []  # 90.5 %: 90 % was reported before the upgrade
    loud = engine.process(_priced([500], ["alice"], AT + 180_000), offset=9, now_ms=AT + 181_000)
    assert [(a.rule, a.severity) for a in loud.alerts if a.rule == "budget"] == [("budget", "ERROR")]  # 95 %

    saved = [(key, blob) for key, blob in engine.drain_state() if key.startswith("budget/")]
    assert saved[-1] == ("budget/ledger", None)  # the old blob goes only after the buckets replacing it
    assert {key for key, blob in saved if blob} == {
        "budget/hour/1741608000000", "budget/day/1741564800000", "budget/month/1740787200000", "budget/meta"}
    upgraded = PartitionEngine(0, SERVICE_DAY_LIMIT, *shared)
    for key, blob in saved[:-1]:
        assert blob is not None
        upgraded.restore(key, blob)
    assert upgraded.budget.to_dict() == engine.budget.to_dict()
    assert upgraded.budget.spent("service", "checkout", "day", AT) == 9550


def test_a_crash_between_bucket_writes_charges_only_the_buckets_left_behind(shared) -> None:  # type: ignore[no-untyped-def]
    engine, store = PartitionEngine(0, EngineConfig(), *shared), {}
    records = [([100, 200], ["a", "b"], AT), ([400], ["a"], AT + 60_000), ([800, 1600], ["a", "b"], AT + 3_600_000)]
    for offset, (costs, users, at) in enumerate(records[:2]):
        engine.process(_priced(costs, users, at), offset=offset, now_ms=at + 1000)
    store.update(engine.drain_state())
    engine.process(_priced(*records[2]), offset=2, now_ms=AT + 3_601_000)  # opens the 13:00 hour
    store.update((key, blob) for key, blob in engine.drain_state() if key.startswith("budget/hour/"))  # crash

    restored = PartitionEngine(0, EngineConfig(), *shared)
    for key, blob in store.items():
        assert blob is not None
        restored.restore(key, blob)
    restored.process(_priced(*records[2]), offset=2, now_ms=AT + 3_601_000)  # replayed: cursor was not written
    assert restored.budget.spent("service", "checkout", "hour", AT + 3_600_000) == 2400  # persisted: charged once
    assert restored.budget.spent("service", "checkout", "hour", AT) == 100 + 200 + 400
    assert restored.budget.spent("service", "checkout", "day", AT) == 700 + 2400  # not persisted: charged now
    assert restored.budget.spent("service", "checkout", "month", AT) == 700 + 2400


def test_held_ledgers_are_not_written_nor_the_cursor_past_them(shared) -> None:  # type: ignore[no-untyped-def]
    """Budget buckets, savings days and the alert policy hold every key of their period: after a group of records
    they wait (the timer writes them), and the cursor with them; the rest is written."""
    engine = _engine(shared)
    ledgers = ("budget/", "usage/", "alerts/")

    def absorb(offset: int, **overrides: object) -> list[str]:
        engine.cursor.advance(offset)  # as the calls agent does for every record it admits
        engine.process(_calls(20, seed=offset, cost_micros=1000, **overrides), offset=offset, now_ms=NOW)
        return [key for key, _blob in engine.drain_state(hold_ledgers=True)]

    first = absorb(0)
    assert "cursor/next" in first and all(any(key.startswith(ns) for key in first) for ns in ledgers[:2]), \
        "no cursor persisted yet: everything is written"
    held = absorb(1, latency_ms=6000.0)  # slow: the policy opens incidents
    assert "cursor/next" not in held and not any(key.startswith(ledgers) for key in held)
    assert any(key.startswith("latency/") for key in held), "the rest of the state is written after every group"
    whole = dict(engine.drain_state())
    assert all(any(key.startswith(ns) for key in whole) for ns in ledgers)
    assert SourceCursor.from_bytes(whole["cursor/next"]).next_offset == 2  # type: ignore[arg-type]
