"""Budgets that say no: a real worker exhausts a budget under load, every SDK call after that is denied in
enforce mode and recorded, and the gate fails open when its state goes stale or the broker is unreachable."""

from __future__ import annotations

import time
from collections.abc import Callable

from llmpulse.producers import AdmissionSettings, Pulse
from tests.support.worker import WorkerProcess

COST = 10_000  # $0.01 a call
LIMIT_USD = 1.0


def _settings(**overrides: object) -> AdmissionSettings:
    base: dict[str, object] = {"mode": "enforce", "max_state_age_s": 4.0, "fail_closed": False}
    return AdmissionSettings(**{**base, **overrides})  # type: ignore[arg-type]


def test_a_budget_exhausted_under_load_denies_every_further_call_and_fails_open_when_stale(
        worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory(LLMPULSE_BUDGETS__SERVICE_HOUR_USD=str(LIMIT_USD))
    pulse = Pulse(service="gated", bootstrap_servers=worker.bootstrap, topic=worker.topic("calls"),
                  budget_state_topic=worker.topic("budget_state"), linger_ms=50, admission=_settings())
    try:
        assert pulse.gate.budgets is not None and pulse.gate.budgets.wait_ready(20)
        admitted = 0
        first_denial = None
        deadline = time.monotonic() + 30
        while first_denial is None and time.monotonic() < deadline:  # ~500 calls/s until the gate says no
            decision = pulse.admit(model="gpt-4o", provider="openai", estimated_input_tokens=100)
            if decision.allowed:
                pulse.record(provider="openai", request_model="gpt-4o", latency_ms=20.0, input_tokens=100,
                             output_tokens=10, cost_micros=COST)
                admitted += 1
                time.sleep(0.002)
            else:
                first_denial = decision
        assert first_denial is not None, worker.log_tail()
        assert (first_denial.scope, first_denial.key, first_denial.period) == ("service", "gated", "hour")
        assert first_denial.retry_after_s is not None and 0 < first_denial.retry_after_s <= 3600
        assert admitted * COST >= LIMIT_USD * 1_000_000  # denied only once the ledger crossed

        further = [pulse.admit(model="gpt-4o", provider="openai") for _ in range(200)]
        assert not any(d.allowed for d in further)
        assert pulse.gate.stats().denied == 201
        pulse.flush(10)
        deadline = time.monotonic() + 20
        while worker.metric("llmpulse_llm_requests_total", service="gated", status="denied") < 201:
            assert time.monotonic() < deadline, "the worker never counted the denials"
            time.sleep(0.5)
        _, budgets = worker.get("/api/budgets")
        assert "gated" in str(budgets)

        worker.stop()  # no more heartbeats: after max_state_age_s the state is stale and the gate fails open
        time.sleep(5)
        stale_before = pulse.gate.stats().stale
        assert pulse.admit(model="gpt-4o", provider="openai").allowed
        assert pulse.gate.stats().stale == stale_before + 1
    finally:
        pulse.close(2)


def test_an_unreachable_broker_fails_open_fast_or_closed_when_set() -> None:
    dead = "127.0.0.1:1"  # nothing listens: the topic cannot be read at all
    with Pulse(service="outage", bootstrap_servers=dead, admission=_settings()) as pulse:
        started = time.perf_counter()
        decisions = [pulse.admit(model="gpt-4o", provider="openai") for _ in range(1000)]
        elapsed = time.perf_counter() - started
        assert all(d.allowed for d in decisions) and pulse.gate.stats().stale == 1000
        assert elapsed < 0.5  # from memory: never waits for the broker
        pulse.close(0.1)
    with Pulse(service="outage", bootstrap_servers=dead, admission=_settings(fail_closed=True)) as pulse:
        decision = pulse.admit(model="gpt-4o", provider="openai")
        assert not decision.allowed and decision.reason == "budget_state_unavailable"
        pulse.close(0.1)
