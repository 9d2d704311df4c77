"""Stream-derived circuit state: the breaker replayed on event time over batches."""

from __future__ import annotations

import numpy as np

from llmpulse.circuit_breaker import CLOSED, HALF_OPEN, OPEN
from llmpulse.processors.core.alert_policy import AlertConfig, AlertPolicy
from llmpulse.processors.core.circuit import CircuitTransition, StreamCircuitTracker

T0 = 1_700_000_000_000


def batch(rows: list[tuple[int, str, str, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ts, provider, model, ok = zip(*rows, strict=True)
    return (
        np.array(ts, dtype=np.int64),
        np.array(provider, dtype=object),
        np.array(model, dtype=object),
        np.array(ok, dtype=bool),
    )


def states(transitions: list[CircuitTransition]) -> list[tuple[str, str, str]]:
    return [(t.provider, t.model, t.state) for t in transitions]


def test_healthy_traffic_emits_nothing() -> None:
    tracker = StreamCircuitTracker()
    rows = [(T0 + i, "openai", "gpt-4o", True) for i in range(1000)]
    assert tracker.apply_batch(*batch(rows)) == []
    assert tracker.state("openai", "gpt-4o") == CLOSED


def test_five_failures_open_only_the_failing_key() -> None:
    tracker = StreamCircuitTracker()
    rows = [(T0 + i * 10, "openai", "gpt-4o", False) for i in range(5)]
    rows += [(T0 + i * 10, "anthropic", "claude", True) for i in range(50)]
    out = tracker.apply_batch(*batch(rows))
    assert states(out) == [("openai", "gpt-4o", OPEN)]
    assert out[0].updated_at_ms == T0 + 40  # the fifth failure's event time
    assert out[0].consecutive_failures == 5
    assert out[0].to_record()["state"] == OPEN
    assert tracker.state("anthropic", "claude") == CLOSED


def test_out_of_order_batch_is_replayed_in_time_order() -> None:
    tracker = StreamCircuitTracker()
    # Four failures then a success in time order: must NOT open, whatever order the batch arrives in.
    rows = [(T0 + 50, "p", "m", True)] + [(T0 + i, "p", "m", False) for i in range(4)]
    rows += [(T0 + 60 + i, "p", "m", False) for i in range(4)]
    assert tracker.apply_batch(*batch(rows[::-1])) == []
    assert tracker.state("p", "m") == CLOSED


def test_recovery_across_batches_on_event_time() -> None:
    tracker = StreamCircuitTracker()
    tracker.apply_batch(*batch([(T0 + i, "p", "m", False) for i in range(5)]))
    # 10 s later (event time) still open; outcomes are ignored while open.
    assert tracker.apply_batch(*batch([(T0 + 10_000, "p", "m", True)])) == []
    assert tracker.state("p", "m") == OPEN
    # 40 s later: half-open at opened + 30 s, then two successes close it.
    out = tracker.apply_batch(*batch([(T0 + 40_000, "p", "m", True), (T0 + 40_100, "p", "m", True)]))
    assert [(t.previous_state, t.state) for t in out] == [(OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert out[0].updated_at_ms == T0 + 4 + 30_000
    assert out[1].updated_at_ms == T0 + 40_100


def test_failure_while_half_open_reopens() -> None:
    tracker = StreamCircuitTracker()
    tracker.apply_batch(*batch([(T0 + i, "p", "m", False) for i in range(5)]))
    out = tracker.apply_batch(*batch([(T0 + 31_000, "p", "m", True), (T0 + 31_500, "p", "m", False)]))
    assert [t.state for t in out] == [HALF_OPEN, OPEN]
    assert out[-1].reason == "failure while half-open"


def test_error_rate_trips_without_a_failure_run() -> None:
    tracker = StreamCircuitTracker()
    rows = [(T0 + i, "p", "m", i % 3 != 0 and i % 3 != 1) for i in range(12)]  # fail, fail, ok, ...
    out = tracker.apply_batch(*batch(rows))
    assert states(out) == [("p", "m", OPEN)]
    assert out[0].reason.startswith("error rate")


def test_state_survives_serialisation() -> None:
    tracker = StreamCircuitTracker()
    tracker.apply_batch(*batch([(T0 + i, "p", "m", False) for i in range(5)]))
    restored = StreamCircuitTracker.from_dict(tracker.to_dict())
    assert restored.state("p", "m") == OPEN
    out = restored.apply_batch(*batch([(T0 + 30_004, "p", "m", True), (T0 + 30_005, "p", "m", True)]))
    assert [t.state for t in out] == [HALF_OPEN, CLOSED]


def test_key_count_is_bounded_but_open_circuits_are_kept() -> None:
    tracker = StreamCircuitTracker(max_keys=3)
    tracker.apply_batch(*batch([(T0 + i, "down", "m", False) for i in range(5)]))
    tracker.apply_batch(*batch([(T0 + 10 + i, "up", f"m{i}", True) for i in range(10)]))
    snapshot = tracker.states()
    assert len(snapshot) == 3
    assert {"provider": "down", "model": "m"}.items() <= next(
        s for s in snapshot if s["provider"] == "down"
    ).items()
    assert tracker.state("down", "m") == OPEN


def test_missing_provider_is_grouped_as_unknown() -> None:
    tracker = StreamCircuitTracker()
    out = tracker.apply_batch(*batch([(T0 + i, None, "m", False) for i in range(5)]))  # type: ignore[misc]
    assert states(out) == [("unknown", "m", OPEN)]


def test_transitions_drive_one_provider_circuit_incident() -> None:
    tracker = StreamCircuitTracker()
    policy = AlertPolicy(AlertConfig(resolve_hold_ms=0))
    opened = tracker.apply_batch(*batch([(T0 + i, "openai", "gpt-4o", False) for i in range(5)]))
    recovered = tracker.apply_batch(*batch([(T0 + 31_000, "openai", "gpt-4o", True)] * 2))
    events = policy.observe_many(t.observation() for t in opened + recovered)
    assert [(e.rule, e.status, e.provider, e.model, e.priority) for e in events] == [
        ("provider_circuit", "firing", "openai", "gpt-4o", "P1"),
        ("provider_circuit", "resolved", "openai", "gpt-4o", "P1"),
    ]
