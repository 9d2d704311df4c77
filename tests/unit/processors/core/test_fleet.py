"""The fleet stage: global budgets and circuits from per-partition summaries, each applied once."""

from __future__ import annotations

import time

import numpy as np

from llmpulse.processors.core.fleet import FleetConfig, FleetEngine, summarize_for_fleet
from llmpulse.processors.core.ledger import BudgetLimits, PeriodLimits
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder

NOW = int(time.time() * 1000)
USD = 1_000_000


def _calls(n: int, **fields: object):  # type: ignore[no-untyped-def]
    rows = [{"event_id": str(i), "timestamp_ms": NOW - 500 + i, "service": "svc", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 100.0, **fields} for i in range(n)]
    calls, _ = CallDecoder(Limits(), 1 << 24, 10_000).decode(BatchEncoder("t").encode_batch(rows), NOW)
    return calls


def test_global_budget_counts_each_summary_once_and_alerts_once_at_the_highest_threshold() -> None:
    limits = BudgetLimits(global_limits=PeriodLimits(hour=10 * USD, day=None, month=None),
                          projection_limit_micros=None, burn_fraction=None)  # its thresholds, not its pace
    fleet = FleetEngine(FleetConfig(limits=limits))
    calls = _calls(100, cost_micros=50_000)  # $5 per summary
    first = summarize_for_fleet(calls, calls.cost_micros, partition=0, offset=7)
    second = summarize_for_fleet(calls, calls.cost_micros, partition=1, offset=7)
    third = summarize_for_fleet(calls, calls.cost_micros, partition=1, offset=8)

    assert fleet.apply(first).alerts == []
    assert not fleet.apply(first).applied  # duplicate from a replayed partition
    crossed = fleet.apply(second).alerts
    assert [(a.rule, a.labels["period"], a.severity) for a in crossed] == [("budget", "hour", "CRITICAL")]
    assert fleet.ledger.spent("global", "all", "hour", NOW) == 10 * USD
    fleet.cursor.advance(12)  # the fleet topic's own position travels in the same blob
    restored = FleetEngine.from_bytes(fleet.to_bytes(), FleetConfig(limits=limits))
    assert restored.cursor.covers(12) and not restored.cursor.covers(13)
    assert FleetEngine.cursor_of(fleet.to_bytes()) == 13
    assert not restored.apply(second).applied
    restored.apply(third)
    assert restored.ledger.spent("global", "all", "hour", NOW) == 15 * USD


def test_provider_outage_opens_the_circuit_and_publishes_a_transition() -> None:
    fleet = FleetEngine(FleetConfig())
    failing = _calls(6, status="error", error_type="APIError:500")
    outcome = fleet.apply(summarize_for_fleet(failing, np.full(6, -1), partition=2, offset=1))
    assert [(t.provider, t.model, t.state) for t in outcome.transitions] == [("openai", "gpt-4o", "OPEN")]
    assert [a.rule for a in outcome.alerts] == ["provider_circuit"]


def test_member_alerts_from_every_partition_become_one_incident_once() -> None:
    from llmpulse.processors.core.alert_policy import AlertEvent
    from llmpulse.processors.core.fleet import summarize_alerts_for_fleet

    def member(service: str, status: str = "firing", at: int = 0) -> AlertEvent:
        return AlertEvent(f"fp-{service}-{NOW}", f"fp-{service}", "latency_p99", "CRITICAL", "P0", status, service,
                          "gpt-4o", "openai", "p99 high", 9.0, 5.0, "1m", NOW, NOW + at, "", None,
                          {"service": service, "model": "gpt-4o", "provider": "openai"})

    fleet = FleetEngine(FleetConfig())
    calls = _calls(10)
    opened = fleet.apply(summarize_for_fleet(calls, calls.cost_micros, 0, 1, [member("chat")])).incidents
    joined = fleet.apply(summarize_for_fleet(calls, calls.cost_micros, 1, 1, [member("search")])).incidents
    assert [e.status for e in opened] == ["opened"] and [e.status for e in joined] == ["updated"]
    assert not fleet.apply(summarize_for_fleet(calls, calls.cost_micros, 1, 1, [member("search")])).applied
    restored = FleetEngine.from_bytes(fleet.to_bytes(), FleetConfig())
    alerts, acked = restored.acknowledge(opened[0].incident_id, "alice", NOW + 5)
    assert alerts == [] and [(e.status, e.acknowledged_by) for e in acked] == [("acknowledged", "alice")]
    restored.apply(summarize_alerts_for_fleet([member("chat", "resolved", 1000)]))
    resolved = restored.apply(summarize_alerts_for_fleet([member("search", "resolved", 2000)])).incidents
    assert [(e.incident_id, e.status, e.scope, e.scope_key) for e in resolved] == [
        (opened[0].incident_id, "resolved", "model", "gpt-4o")]
