"""Alert lifecycle: one firing per incident, escalation, hold before resolve, cooldown, acknowledgement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmpulse.processors.core.alert_policy import (
    AlertConfig,
    AlertPolicy,
    Observation,
    fingerprint,
)
from llmpulse.processors.core.mitigations import MITIGATIONS

MIN = 60_000
T0 = 1_700_000_000_000
LABELS = (("model", "gpt-4o"), ("provider", "openai"), ("service", "search"))


def obs(minute: float, severity: str | None, rule: str = "error_rate", observed: float = 0.2) -> Observation:
    return Observation(
        rule=rule,
        labels=LABELS,
        severity=severity,
        observed=observed,
        threshold=0.05,
        window="1m",
        summary=f"error rate {observed:.0%}",
        now_ms=T0 + int(minute * MIN),
    )


def test_many_crossings_fire_once_with_schema_fields() -> None:
    policy = AlertPolicy()
    events = policy.observe_many(obs(m, "WARNING") for m in range(10))
    assert len(events) == 1
    event = events[0]
    assert (event.status, event.severity, event.priority) == ("firing", "WARNING", "P2")
    assert (event.service, event.model, event.provider) == ("search", "gpt-4o", "openai")
    assert event.alert_id == f"{event.fingerprint}-{T0}"
    assert event.mitigation == MITIGATIONS["error_rate"]
    assert event.labels == dict(LABELS)
    record = event.to_record()
    assert set(record) == {
        "alert_id", "fingerprint", "rule", "severity", "priority", "status", "service", "model", "provider",
        "summary", "observed", "threshold", "window", "started_at_ms", "updated_at_ms", "mitigation",
        "acknowledged_by", "labels",
    }  # fmt: skip
    assert [a.alert_id for a in policy.active()] == [event.alert_id]


def test_fingerprint_ignores_label_order_and_separates_rules() -> None:
    assert fingerprint("r", [("a", "1"), ("b", "2")]) == fingerprint("r", [("b", "2"), ("a", "1")])
    assert fingerprint("r", [("a", "1")]) != fingerprint("s", [("a", "1")])
    assert fingerprint("r", [("a", "1")]) != fingerprint("r", [("a", "2")])


def test_escalation_refires_same_incident_and_deescalation_is_silent() -> None:
    policy = AlertPolicy()
    first = policy.observe(obs(0, "WARNING"))[0]
    escalated = policy.observe(obs(1, "CRITICAL", observed=0.3))
    assert len(escalated) == 1
    assert escalated[0].alert_id == first.alert_id
    assert (escalated[0].severity, escalated[0].priority, escalated[0].status) == ("CRITICAL", "P0", "firing")
    assert escalated[0].started_at_ms == T0 and escalated[0].updated_at_ms == T0 + MIN
    assert policy.observe(obs(2, "WARNING")) == []
    assert policy.active()[0].severity == "CRITICAL"


def test_resolves_only_after_clear_for_hold_time() -> None:
    policy = AlertPolicy()
    policy.observe(obs(0, "ERROR"))
    assert policy.observe(obs(1, None, observed=0.01)) == []  # clear starts
    assert policy.observe(obs(2.5, None, observed=0.01)) == []  # 1.5 min < 2 min hold
    resolved = policy.observe(obs(3, None, observed=0.01))
    assert [(e.status, e.observed) for e in resolved] == [("resolved", 0.01)]
    assert policy.active() == []
    assert policy.observe(obs(4, None)) == []  # no second resolved


def test_flapping_restarts_the_hold() -> None:
    policy = AlertPolicy()
    policy.observe(obs(0, "ERROR"))
    policy.observe(obs(1, None))
    assert policy.observe(obs(2, "ERROR")) == []  # active again: still the same incident, no new firing
    assert policy.observe(obs(3.5, None)) == []  # hold restarts here
    assert policy.observe(obs(4.5, None)) == []
    assert [e.status for e in policy.observe(obs(5.5, None))] == ["resolved"]


def test_cooldown_suppresses_and_counts_then_allows_a_new_incident() -> None:
    policy = AlertPolicy()
    first = policy.observe(obs(0, "ERROR"))[0]
    policy.observe(obs(1, None))
    policy.observe(obs(3, None))  # resolved at minute 3
    assert policy.observe(obs(10, "ERROR")) == []
    assert policy.observe(obs(17.9, "CRITICAL")) == []
    assert policy.suppressed == {"error_rate": 2}
    again = policy.observe(obs(18, "ERROR"))  # 15 min after the resolve
    assert len(again) == 1 and again[0].status == "firing"
    assert again[0].alert_id != first.alert_id


def test_other_label_sets_are_independent() -> None:
    policy = AlertPolicy()
    policy.observe(obs(0, "ERROR"))
    other = Observation("error_rate", (("service", "billing"),), "ERROR", 0.3, 0.05, "1m", "x", T0)
    assert len(policy.observe(other)) == 1
    assert len(policy.active()) == 2


def test_acknowledge_is_idempotent_and_escalation_clears_it() -> None:
    policy = AlertPolicy()
    alert_id = policy.observe(obs(0, "WARNING"))[0].alert_id
    ack = policy.acknowledge(alert_id, "alice", T0 + MIN)
    assert ack is not None and (ack.status, ack.acknowledged_by) == ("acknowledged", "alice")
    assert policy.acknowledge(alert_id, "bob", T0 + 2 * MIN) == ack
    assert policy.acknowledge("nope", "alice", T0) is None
    assert policy.observe(obs(3, "WARNING")) == []  # acknowledged: same severity stays quiet
    refired = policy.observe(obs(4, "CRITICAL"))[0]
    assert (refired.status, refired.acknowledged_by) == ("firing", None)


def test_acknowledged_incident_resolves_and_cannot_be_acked_after() -> None:
    policy = AlertPolicy(AlertConfig(resolve_hold_ms=0))
    alert_id = policy.observe(obs(0, "ERROR"))[0].alert_id
    policy.acknowledge(alert_id, "alice", T0)
    assert [e.status for e in policy.observe(obs(1, None))] == ["resolved"]
    assert policy.acknowledge(alert_id, "alice", T0 + 2 * MIN) is None


def test_tick_resolves_held_and_stale_incidents() -> None:
    policy = AlertPolicy()
    policy.observe(obs(0, "ERROR"))
    policy.observe(obs(1, None))
    assert policy.tick(T0 + 2 * MIN) == []
    assert [e.status for e in policy.tick(T0 + 3 * MIN)] == ["resolved"]
    quiet = AlertPolicy()
    quiet.observe(obs(0, "ERROR", rule="latency_p95"))
    assert quiet.tick(T0 + 59 * MIN) == []
    stale = quiet.tick(T0 + 60 * MIN)
    assert [e.status for e in stale] == ["resolved"]
    assert stale[0].summary.startswith("no data for 60 min")


def test_resolved_incidents_are_evicted_after_cooldown() -> None:
    policy = AlertPolicy(AlertConfig(resolve_hold_ms=0))
    for i in range(50):
        labels = (("service", f"s{i}"),)
        policy.observe(Observation("budget", labels, "WARNING", 1, 1, "hour", "x", T0))
        policy.observe(Observation("budget", labels, None, 0, 1, "hour", "x", T0 + MIN))
    assert len(policy.to_dict()["incidents"]) == 50
    policy.tick(T0 + 16 * MIN)
    assert policy.to_dict()["incidents"] == []


def test_incident_count_is_capped() -> None:
    policy = AlertPolicy(AlertConfig(max_incidents=10))
    for i in range(25):
        policy.observe(Observation("budget", (("user", f"u{i}"),), "WARNING", 1, 1, "day", "x", T0 + i))
    active = policy.active()
    assert len(active) == 10
    assert {a.labels["user"] for a in active} == {f"u{i}" for i in range(15, 25)}  # most recent kept


def test_state_round_trips_through_json() -> None:
    policy = AlertPolicy()
    alert_id = policy.observe(obs(0, "ERROR"))[0].alert_id
    policy.observe(obs(1, None))
    restored = AlertPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert restored.get(alert_id) == policy.get(alert_id)
    assert [e.status for e in restored.observe(obs(3, None))] == ["resolved"]


def test_unknown_severity_is_rejected() -> None:
    with pytest.raises(ValueError):
        AlertPolicy().observe(obs(0, "SEVERE"))


def test_every_rule_has_a_mitigation() -> None:
    rules = {
        "latency_p95", "latency_p99", "error_rate", "cost_per_request", "budget", "budget_burn", "budget_projection",
        "confidence_drift", "distribution_drift", "prompt_injection", "security_incident", "hallucination",
        "pii_leak", "unsafe_content", "no_answer_rate", "provider_circuit", "ab_regression", "token_average",
        "request_budget", "ab_improvement", "ab_winner", "quality_drop", "concept_drift",
    }  # fmt: skip
    assert set(MITIGATIONS) == rules
    assert all(MITIGATIONS[rule] for rule in rules)


def test_bytes_and_open_rules_stay_what_a_rebuild_gives_through_a_random_lifecycle() -> None:
    """to_bytes re-encodes only touched incidents and open_rules is kept up to date, never rebuilt: both must
    equal the from-scratch forms (compact JSON of to_dict, open incidents grouped by labels) at every step."""
    rng = np.random.default_rng(5)
    config = AlertConfig(max_incidents=60)
    policy = AlertPolicy(config)
    now = T0
    for step in range(4000):
        now += int(rng.integers(0, 20_000))
        labels = (("service", f"s{int(rng.integers(0, 80))}"), ("model", "m"))
        severity = (None, None, "INFO", "WARNING", "CRITICAL")[int(rng.integers(0, 5))]
        policy.observe(Observation(str(rng.choice(["a", "b"])), labels, severity, float(rng.random()), 0.5, "5m",
                                   f"step {step}" if rng.random() < 0.5 else "", now))
        if rng.random() < 0.05:
            policy.tick(now)
        if rng.random() < 0.02 and policy.active():
            policy.acknowledge(policy.active()[-1].alert_id, "me", now)
        if step % 50 == 0:
            assert policy.to_bytes() == json.dumps(policy.to_dict(), separators=(",", ":")).encode()
            rebuilt: dict[tuple[tuple[str, str], ...], set[str]] = {}
            for event in policy.active():
                rebuilt.setdefault(tuple(sorted(event.labels.items())), set()).add(event.rule)
            assert dict(policy.open_rules()) == {k: frozenset(v) for k, v in rebuilt.items()}
            assert policy._resolved == {fp for fp, i in policy._incidents.items() if i.status == "resolved"}
            restored = AlertPolicy.from_bytes(policy.to_bytes(), config)
            assert restored.to_bytes() == policy.to_bytes()
            assert dict(restored.open_rules()) == dict(policy.open_rules())
