"""After a drift incident is resolved or acknowledged the reference starts over: a completed rollout is the new
normal, once per incident, through the engine's hook, persisted and the same on replay."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from llmpulse.processors.core.alert_policy import (
    ACKNOWLEDGED,
    FIRING,
    RESOLVED,
    AlertConfig,
    AlertEvent,
    AlertPolicy,
    Observation,
)
from llmpulse.processors.core.drift_monitor import DriftConfig, DriftMonitor
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.pricing import Pricer

KEY = "checkout\x1fgpt-4o"
LABELS = (("service", "checkout"), ("model", "gpt-4o"))
HOUR_MS = 3_600_000
CONFIG = DriftConfig(reference_size=1000, block_size=200, min_current=100)


def traffic(n: int, rng: np.random.Generator, slower: float = 1.0) -> dict[str, np.ndarray]:
    outputs = np.clip(rng.lognormal(5.0, 0.8, n), 1, 4000)
    return {"confidence": rng.beta(16, 4, n), "tokens": 800.0 + outputs,
            "latency": slower * (0.3 + 0.0016 * outputs) * rng.lognormal(0.0, 0.3, n)}


class Worker:
    """DriftMonitor and AlertPolicy wired as PartitionEngine wires them (1 call/s, a record per 10 calls)."""

    def __init__(self, config: DriftConfig) -> None:
        self.monitor = DriftMonitor(config)
        self.policy = AlertPolicy(AlertConfig())
        self.offset = 0
        self.now_ms = 0
        self.events: list[AlertEvent] = []

    def send(self, calls: dict[str, np.ndarray]) -> None:
        for lo in range(0, len(calls["latency"]), 10):
            self.offset += 1
            self.now_ms += 10_000
            part = {name: column[lo : lo + 10] for name, column in calls.items()}
            self.monitor.update([KEY], np.zeros(len(part["latency"]), dtype=np.int64), part, self.offset)
            self._decided(self.policy.observe_many(self.monitor.observe(KEY, self.now_ms)))

    def idle(self, ms: int) -> None:
        """No traffic: only the timer runs (the policy resolves incidents whose source went quiet)."""
        self.now_ms += ms
        self._decided(self.policy.tick(self.now_ms))

    def _decided(self, events: list[AlertEvent]) -> None:
        for event in events:
            self.monitor.rebaseline_for_alert(event)
        self.events += events

    def firings(self, rule: str = "distribution_drift") -> list[AlertEvent]:
        return [e for e in self.events if e.status == FIRING and e.rule == rule]


@pytest.mark.parametrize("rebaseline", [True, False])
def test_a_completed_rollout_fires_once_then_is_the_new_normal(rebaseline: bool) -> None:
    rng = np.random.default_rng(1)
    worker = Worker(DriftConfig(reference_size=1000, block_size=200, min_current=100,
                                rebaseline_after_incident=rebaseline))
    worker.send(traffic(1100, rng))
    worker.send(traffic(400, rng, slower=1.5))  # the rollout: every call 1.5x slower, for good
    assert [e.labels["feature"] for e in worker.firings()] == ["latency"]
    worker.idle(2 * HOUR_MS)  # traffic pauses: the incident resolves (its source went quiet)
    assert [e.status for e in worker.events if e.rule == "distribution_drift"] == [FIRING, RESOLVED]
    worker.send(traffic(3000, rng, slower=1.5))  # traffic is back, still 1.5x slower
    if rebaseline:
        assert len(worker.firings()) == 1  # the reference started over on the rollout's latency
        figures = worker.monitor.figures(KEY)
        assert figures["latency_drifted"] == 0.0 and figures["latency_psi"] < 0.2
    else:  # the old reference stays: the same rollout fires again after the cooldown
        assert len(worker.firings()) == 2


def test_rebaselining_is_the_same_on_replay_and_once_per_incident() -> None:
    runs = []
    for _ in range(2):  # the same records and events twice: the same state, byte for byte
        worker = Worker(CONFIG)
        rng = np.random.default_rng(2)
        worker.send(traffic(1100, rng))
        worker.send(traffic(400, rng, slower=1.5))
        worker.idle(2 * HOUR_MS)
        runs.append(worker.monitor.state.get(KEY).to_bytes())  # type: ignore[union-attr]
    assert runs[0] == runs[1]
    resolved = next(e for e in worker.events if e.status == RESOLVED)
    assert not worker.monitor.rebaseline_for_alert(resolved)  # already started over for this incident
    later = replace(resolved, started_at_ms=resolved.updated_at_ms + 1, updated_at_ms=resolved.updated_at_ms + 2)
    assert worker.monitor.rebaseline_for_alert(later)  # a newer incident starts it over again


def test_only_resolved_or_acknowledged_drift_incidents_start_a_reference_over() -> None:
    worker = Worker(CONFIG)
    worker.send(traffic(1100, np.random.default_rng(3)))
    drift = worker.monitor.state.get(KEY)
    assert drift is not None and drift.features["latency"].frozen
    base = dict(alert_id="a-1", fingerprint="a", severity="WARNING", priority="P2", service="checkout",
                model="gpt-4o", provider=None, summary="", observed=0.5, threshold=0.2, window="", started_at_ms=5,
                updated_at_ms=10, mitigation="", acknowledged_by=None)

    def event(rule: str, status: str, **labels: str) -> AlertEvent:
        return AlertEvent(**base, rule=rule, status=status, labels={"service": "checkout", "model": "gpt-4o",
                                                                    **labels})

    assert not worker.monitor.rebaseline_for_alert(event("distribution_drift", FIRING, feature="latency"))
    assert not worker.monitor.rebaseline_for_alert(event("latency_p95", RESOLVED))
    assert drift.features["latency"].frozen
    assert worker.monitor.rebaseline_for_alert(event("distribution_drift", ACKNOWLEDGED, feature="latency"))
    assert not drift.features["latency"].frozen and drift.features["tokens"].frozen  # that feature only
    assert worker.monitor.rebaseline_for_alert(event("confidence_drift", RESOLVED))
    assert not drift.features["confidence"].frozen and drift.features["tokens"].frozen


@pytest.fixture(scope="module")
def shared() -> tuple[Pricer, GuardMonitor]:
    return Pricer(), GuardMonitor(GuardMonitorConfig())


def test_the_engine_rebaselines_when_a_drift_incident_is_acknowledged(shared: tuple[Pricer, GuardMonitor]) -> None:
    engine = PartitionEngine(0, EngineConfig(drift=CONFIG), *shared)
    calls = traffic(1100, np.random.default_rng(4))
    engine.drift.update([KEY], np.zeros(1100, dtype=np.int64), calls, offset=1)
    engine.drain_state()
    fired = engine.policy.observe(Observation("distribution_drift", (*LABELS, ("feature", "tokens")), "WARNING",
                                              0.5, 0.2, "last 200 values", "tokens drifted", 1_000))
    acknowledged = engine.acknowledge(fired[0].alert_id, "on-call", 2_000)
    assert acknowledged is not None and acknowledged.status == ACKNOWLEDGED
    tokens = engine.drift.state.get(KEY).features["tokens"]  # type: ignore[union-attr]
    assert not tokens.frozen and tokens.reference_count == 0 and tokens.rebaselined_at_ms == 2_000
    assert f"drift/{KEY}" in dict(engine.drain_state())  # persisted with the policy's change

    engine.drift.update([KEY], np.zeros(300, dtype=np.int64), traffic(300, np.random.default_rng(5)), offset=2)
    engine.acknowledge(fired[0].alert_id, "on-call", 3_000)  # acknowledging again: same incident, no new start
    assert tokens.reference_count == 300
