"""The fleet stage: global budgets and circuits from per-partition summaries, each applied once."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from llmpulse.processors.core.fleet import FleetConfig, FleetEngine, summarize_for_fleet
from llmpulse.processors.core.ledger import BudgetLimits, PeriodLimits
from tests.support.calls import decoded

NOW = int(time.time() * 1000)
USD = 1_000_000


def _calls(n: int, **fields: object):  # type: ignore[no-untyped-def]
    rows = [{"event_id": str(i), "timestamp_ms": NOW - 500 + i, "service": "svc", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 100.0, **fields} for i in range(n)]
    return decoded(rows, NOW)


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


def test_a_crash_between_fleet_checkpoints_replays_to_the_same_spend_and_the_same_alert_ids() -> None:
    # The fleet blob is written at checkpoints: a worker that dies after absorbing summaries (and sending the
    # alerts they decided) but before writing them leaves the next owner an older blob, and it replays the fleet
    # topic from that blob's cursor.
    limits = BudgetLimits(global_limits=PeriodLimits(hour=40 * USD, day=None, month=None),
                          projection_limit_micros=None, burn_fraction=None)
    config = FleetConfig(limits=limits)
    calls = _calls(100, cost_micros=50_000)  # $5 per summary, $60 in all: past every threshold of $40
    topic = [summarize_for_fleet(calls, calls.cost_micros, partition=i % 3, offset=i // 3) for i in range(12)]

    def run(fleet: FleetEngine, first: int, last: int) -> list[str]:
        decided = []
        for position in range(first, last):
            decided += [alert.alert_id for alert in fleet.apply(topic[position]).alerts]
            fleet.cursor.advance(position)
        return decided

    straight = FleetEngine(config)
    expected = run(straight, 0, len(topic))
    crashed = FleetEngine(config)
    sent = run(crashed, 0, 4)
    checkpoint = crashed.to_bytes()  # the last blob written
    sent += run(crashed, 4, 10)  # absorbed, its alerts sent, never written: the worker dies here
    restored = FleetEngine.from_bytes(checkpoint, config)
    resume = FleetEngine.cursor_of(checkpoint)
    sent += run(restored, resume or 0, len(topic))

    assert resume == 4 and len(expected) >= 2
    assert restored.ledger.spent("global", "all", "hour", NOW) == straight.ledger.spent("global", "all", "hour",
                                                                                           NOW) == 60 * USD
    assert set(sent) == set(expected)  # an alert decided again carries the same id: a repeat, never a new one
    assert restored.to_bytes() == straight.to_bytes()


def test_provider_outage_opens_the_circuit_and_publishes_a_transition() -> None:
    fleet = FleetEngine(FleetConfig())
    failing = _calls(6, status="error", error_type="APIError:500")
    outcome = fleet.apply(summarize_for_fleet(failing, np.full(6, -1), partition=2, offset=1))
    assert [(t.provider, t.model, t.state) for t in outcome.transitions] == [("openai", "gpt-4o", "OPEN")]
    assert [a.rule for a in outcome.alerts] == ["provider_circuit"]


def test_outcomes_travel_compactly_and_summaries_written_before_still_apply() -> None:
    """Every call's outcome reaches the circuits from a summary of ~2-3 bytes a call (it carried each timestamp as
    JSON digits, ~15 bytes a call); a summary of the earlier layout, still on the topic after an upgrade, applies
    alike; a damaged one is refused with its reason."""
    status = np.where(np.arange(2_000) < 1_500, "ok", "error")  # failures: every call's outcome travels
    rows = [{"event_id": str(i), "timestamp_ms": NOW - 5_000 + 2 * i + (i % 7), "service": "svc",
             "provider": "openai", "request_model": "gpt-4o", "status": str(status[i]), "latency_ms": 100.0,
             **({"error_type": "APIError:500"} if status[i] == "error" else {})} for i in range(2_000)]
    calls = decoded(rows, NOW)
    summary = summarize_for_fleet(calls, np.full(len(calls), -1), partition=0, offset=1)
    assert len(summary) < 3 * len(calls)
    written = json.loads(summary)
    earlier = dict(written, outcomes=[[provider, model, [row["timestamp_ms"] for row in rows], oks]
                                      for provider, model, _times, oks in written["outcomes"]])
    now, before = FleetEngine(FleetConfig()), FleetEngine(FleetConfig())
    assert [t.state for t in now.apply(summary).transitions] == ["OPEN"]
    assert [t.state for t in before.apply(json.dumps(earlier).encode()).transitions] == ["OPEN"]
    assert now.to_bytes() == before.to_bytes()
    damaged = dict(written, o=2, outcomes=[[*row[:2], row[2][:-8], row[3]] for row in written["outcomes"]])
    with pytest.raises(ValueError, match="timestamps"):
        FleetEngine(FleetConfig()).apply(json.dumps(damaged).encode())


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


def _summary(partition: int, offset: int, ts: list[int], oks: str,
             key: tuple[str, str] = ("anthropic", "claude")) -> bytes:
    """A fleet summary carrying only these call outcomes of one provider/model ("1" ok, "0" failed)."""
    return json.dumps({"p": partition, "o": offset, "spend": [], "outcomes": [[*key, ts, oks]]}).encode()


def _outage_summaries(partition: int, start: int = 0, chunks: int = 30, chunk_s: int = 10) -> list[bytes]:
    """One summary per ``chunk_s`` of a partition's claude calls (2/s): every call fails from 60 s to 180 s."""
    out = []
    for chunk in range(chunks):
        ts = [NOW + (chunk * chunk_s * 1000) + i * 500 + partition * 250 for i in range(chunk_s * 2)]
        oks = "".join("0" if 60_000 <= t - NOW < 180_000 else "1" for t in ts)
        out.append(_summary(partition, start + chunk, ts, oks))
    return out


def _states(fleet: FleetEngine, summaries: list[bytes]) -> list[tuple[str, int]]:
    return [(t.state, t.updated_at_ms - NOW) for s in summaries for t in fleet.apply(s).transitions]


def test_a_partition_far_behind_the_others_does_not_reopen_a_recovered_circuit() -> None:
    # Partition 0 is read to the end (the outage and the recovery) before partition 1's first summary: its old
    # failures, replayed now, would trip the closed breaker again at the present, for an outage that is over.
    fleet = FleetEngine(FleetConfig())
    ahead = _states(fleet, _outage_summaries(0))
    behind = _states(fleet, _outage_summaries(1))
    assert ahead[0] == ("OPEN", 62_000) and ahead[-1][0] == "CLOSED" and ahead[-1][1] >= 180_000
    assert behind == [] and fleet.circuits.state("anthropic", "claude") == "CLOSED"
    assert fleet.circuits.late_outcomes > 0
    restored = FleetEngine.from_bytes(fleet.to_bytes(), FleetConfig())
    assert restored.circuits.late_outcomes == fleet.circuits.late_outcomes


def test_partitions_a_few_seconds_apart_reach_the_circuit_in_event_time_order() -> None:
    # Partition 1 arrives one 5 s summary late (up to 10 s of event time behind): the circuit sees what one ordered
    # stream of both would show.
    ordered, reference = FleetEngine(FleetConfig()), []
    for offset, pair in enumerate(zip(_outage_summaries(0, chunk_s=5, chunks=60),
                                      _outage_summaries(1, chunk_s=5, chunks=60), strict=True)):
        rows = sorted((t, ok) for s in pair for _, _, ts, oks in json.loads(s)["outcomes"]
                      for t, ok in zip(ts, oks, strict=True))
        one = _summary(9, offset, [t for t, _ in rows], "".join(ok for _, ok in rows))
        reference += [(t.state, t.updated_at_ms - NOW) for t in ordered.apply(one).transitions]
    skewed = _outage_summaries(0, start=1, chunk_s=5, chunks=60)
    late = _outage_summaries(1, start=1, chunk_s=5, chunks=60)
    fleet = FleetEngine(FleetConfig())
    # both partitions are known before the run (a source counts from its first summary: before that, nothing
    # can wait for it)
    for partition in (0, 1):
        fleet.apply(_summary(partition, 0, [NOW - 1000], "1"))
    states = _states(fleet, [skewed[0], late[0], skewed[1]])  # from here on, partition 1 is a summary behind
    for i in range(2, 60):
        states += _states(fleet, [skewed[i], late[i - 1]])
    states += _states(fleet, [late[-1]]) + [(t.state, t.updated_at_ms - NOW) for t in fleet.tick(NOW).transitions]
    assert states == reference and fleet.circuits.late_outcomes == 0
    assert reference[0][0] == "OPEN" and reference[-1][0] == "CLOSED"


def test_outcomes_of_several_keys_keep_their_keys_while_held_merged_and_restored() -> None:
    # Each summary names its keys in its own order; partition 1 runs a summary behind, so its outcomes and
    # partition 0's wait together, are merged and released, some across a restart of the stage.
    def summary(partition: int, chunk: int) -> bytes:
        ts = [NOW + chunk * 4_000 + i * 500 + partition * 250 for i in range(8)]
        failing = "".join("0" if 60_000 <= t - NOW < 180_000 else "1" for t in ts)
        rows = [["anthropic", "claude", ts, failing], ["openai", "gpt-4o", ts, "1" * len(ts)],
                [None, "local-llm", ts, "0" * len(ts)]]
        return json.dumps({"p": partition, "o": chunk, "spend": [],
                           "outcomes": rows if partition == 0 else rows[::-1]}).encode()

    order = [summary(0, 0)] + [s for chunk in range(1, 60) for s in (summary(0, chunk), summary(1, chunk - 1))]
    straight = FleetEngine(FleetConfig())
    expected = [(t.provider, t.model, t.state, t.updated_at_ms) for s in order for t in straight.apply(s).transitions]
    restarted, seen, held = FleetEngine(FleetConfig()), [], []
    for i, s in enumerate(order):
        if i % 7 == 6:
            held.append(restarted.outcomes.held)  # outcomes waiting for partition 1 as the stage restarts
            restarted = FleetEngine.from_bytes(restarted.to_bytes(), FleetConfig())
        seen += [(t.provider, t.model, t.state, t.updated_at_ms) for t in restarted.apply(s).transitions]
    assert seen == expected and min(held) > 0
    assert {(provider, model) for provider, model, _, _ in expected} == {("anthropic", "claude"),
                                                                        ("unknown", "local-llm")}
    claude = [state for provider, _, state, _ in expected if provider == "anthropic"]
    assert claude[0] == "OPEN" and claude[-1] == "CLOSED"  # its outage, then the recovery: no one else's failures
    assert straight.circuits.state("openai", "gpt-4o") == "CLOSED"
    assert straight.circuits.state("unknown", "local-llm") == "OPEN"


def test_outcomes_held_for_a_slower_partition_reach_the_circuit_on_a_quiet_tick() -> None:
    def summary(partition: int, offset: int, first_ms: int, oks: str) -> bytes:
        return _summary(partition, offset, [NOW + first_ms + i * 100 for i in range(len(oks))], oks,
                        ("openai", "gpt-4o"))

    fleet = FleetEngine(FleetConfig())
    assert fleet.apply(summary(0, 1, 0, "11")).transitions == []
    # partition 1 fails 3 s later than partition 0 has reported: held until partition 0 passes it
    assert fleet.apply(summary(1, 1, 3_000, "000000")).transitions == []
    assert fleet.outcomes.held == 6
    assert fleet.tick(NOW).transitions == []  # a summary came since the last tick: not quiet yet
    restored = FleetEngine.from_bytes(fleet.to_bytes(), FleetConfig())  # held outcomes survive a restart
    quiet = restored.tick(NOW + 5_000)
    assert [t.state for t in quiet.transitions] == ["OPEN"]
    assert [(a.rule, a.status) for a in quiet.alerts] == [("provider_circuit", "firing")]
