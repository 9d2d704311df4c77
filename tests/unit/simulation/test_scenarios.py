"""Each incident scenario changes what its alert watches, inside its window only, then traffic recovers."""

from __future__ import annotations

import re
import statistics
from typing import Any

import numpy as np
import pytest

from llmpulse.pii import find_pii, luhn_valid, redact
from llmpulse.producers.simulation import scenarios
from llmpulse.producers.simulation.simulator import generate_calls, simulate
from llmpulse.producers.simulation.traffic_model import TrafficModel
from tests.support.clock import FakeClock
from tests.support.recording import RecordingPulse

RATE = 50.0  # the CLI default: scenario defaults are sized for it


@pytest.fixture(scope="module")
def model() -> TrafficModel:
    return TrafficModel.load()


def run(model: TrafficModel, name: str, duration_s: float = 140.0, **window: float) -> tuple[list[dict], int, int]:
    """Real-time run on a fake clock; returns calls and the scenario window in ms."""
    recorder, clock = RecordingPulse(), FakeClock()
    scenario = scenarios.get(name, window.get("start"), window.get("duration"))
    summary = simulate(recorder, model, [scenario], duration_s=duration_s, rate=RATE, clock=clock, seed=7)
    (shown,) = summary.scenarios
    assert shown.calls > 0 and summary.recorded == len(recorder.calls)
    return recorder.calls, shown.start_ms, shown.end_ms


def split(calls: list[dict], start: int, end: int) -> tuple[list[dict], list[dict], list[dict]]:
    before = [c for c in calls if c["timestamp_ms"] < start]
    during = [c for c in calls if start <= c["timestamp_ms"] < end]
    after = [c for c in calls if c["timestamp_ms"] >= end]
    return before, during, after


def p(calls: list[dict], q: float, key: str = "latency_ms") -> float:
    return float(np.percentile([c[key] for c in calls], q))


def error_ratio(calls: list[dict]) -> float:
    return statistics.fmean(c["status"] != "ok" for c in calls)


def mean_cost_usd(calls: list[dict]) -> float:
    from llmpulse.processors.core.pricing import Pricer

    pricer = Pricer()
    costs = [
        c.get("cost_micros")
        or pricer.price(c["provider"], c["request_model"], c["input_tokens"], c["output_tokens"], c["cached_tokens"])
        for c in calls
    ]
    return statistics.fmean(costs) / 1e6


def guard(prompts: list[str | None], responses: list[str | None]) -> Any:
    from llmpulse.processors.core.guards.guard import GuardConfig, TextGuard
    from llmpulse.processors.loaders import read_injection_model

    p_col, r_col = np.empty(len(prompts), dtype=object), np.empty(len(responses), dtype=object)
    p_col[:], r_col[:] = prompts, responses
    return TextGuard(GuardConfig(), read_injection_model()).check_batch(p_col, r_col)


def test_latency_spike_then_recovery(model: TrafficModel) -> None:
    calls, start, end = run(model, "latency-spike")
    before, during, after = split(calls, start, end)
    assert p(before, 95) < 2_000 and p(after, 95) < 2_000
    assert p(during, 95) > 3_000  # "well above" the 2 s warning
    assert p(during, 99) > 5_000
    assert end - start == 60_000


def test_error_burst_mixes_failure_kinds(model: TrafficModel) -> None:
    calls, start, end = run(model, "error-burst")
    before, during, after = split(calls, start, end)
    assert error_ratio(during) > 0.10
    assert error_ratio(before) < 0.03 and error_ratio(after) < 0.03
    assert {"error", "timeout", "rate_limited"} <= {c["status"] for c in during}
    # Timeouts are slow; too many would turn an error incident into a latency one as well.
    assert statistics.fmean(c["status"] == "timeout" for c in during) < 0.01


def test_cost_spike_raises_cost_per_request_of_its_service(model: TrafficModel) -> None:
    calls, start, end = run(model, "cost-spike")
    before, during, _ = split(calls, start, end)
    target = scenarios.COST_SERVICE
    assert mean_cost_usd([c for c in before if c["service"] == target]) < 0.015
    assert mean_cost_usd([c for c in during if c["service"] == target]) > 0.015 * 3
    assert mean_cost_usd([c for c in during if c["service"] != target]) < 0.015


def test_budget_exhaustion_spends_ten_dollars_within_thirty_seconds(model: TrafficModel) -> None:
    calls, start, _ = run(model, "budget-exhaustion", duration_s=60.0)
    first_30s = [c for c in calls if start <= c["timestamp_ms"] < start + 30_000 and c.get("labels")]
    assert mean_cost_usd(first_30s) * len(first_30s) > 10.0
    assert {c["user_hash"] for c in first_30s} == {scenarios.BATCH_JOB_USER}
    assert max(mean_cost_usd([c]) for c in first_30s) < 0.5  # each call stays under the per-request limit


def test_confidence_drift_after_a_baseline(model: TrafficModel) -> None:
    calls, start, end = run(model, "confidence-drift", duration_s=240.0)
    before, during, after = split(calls, start, end)
    assert start - calls[0]["timestamp_ms"] >= 89_000
    mean = lambda cs: statistics.fmean(c["confidence"] for c in cs if "confidence" in c)  # noqa: E731
    assert mean(during) < mean(before) * 0.85
    assert mean(after) == pytest.approx(mean(before), abs=0.02)


def test_injection_campaign_comes_from_one_user(model: TrafficModel) -> None:
    calls, start, end = run(model, "injection-campaign", duration_s=90.0)
    attacks = [c for c in calls if c.get("labels", {}).get("sim_scenario") == "injection-campaign"]
    assert len(attacks) == pytest.approx(2.0 * 60, rel=0.25)  # ~2 attempts a second for 60 s
    assert {c["user_hash"] for c in attacks} == {scenarios.ATTACKER_USER}
    assert {c["service"] for c in attacks} == {scenarios.INJECTION_SERVICE}
    assert all(start <= c["timestamp_ms"] < end for c in attacks)
    assert len({c["prompt_text"] for c in attacks}) > 30  # variations, not one string replayed
    verdict = guard([c["prompt_text"] for c in attacks], [c["response_text"] for c in attacks])
    assert verdict.injection.all()
    benign = [c for c in calls if "prompt_text" in c and not c.get("labels")]
    assert not guard([c["prompt_text"] for c in benign], [c["response_text"] for c in benign]).injection.any()


def test_hallucination_responses_are_confident_domain_claims() -> None:
    calls = generate_calls(3_000, 3, scenario="hallucination")
    risky = [c for c in calls if c.get("labels")]
    assert len(risky) == pytest.approx(3_000 * 2.0 / RATE * 0.87, rel=0.3)  # 2/s of answered calls
    verdict = guard([c["prompt_text"] for c in risky], [c["response_text"] for c in risky])
    assert verdict.hallucination_risk.all()
    hedges = re.compile(r"\b(may|might|could|possibly|consult)\b", re.I)
    assert not any(hedges.search(c["response_text"]) for c in risky)


def test_pii_leak_responses_carry_luhn_valid_cards() -> None:
    calls = generate_calls(3_000, 4, scenario="pii-leak")
    leaks = [c["response_text"] for c in calls if c.get("labels")]
    assert len(leaks) > 20
    for text in leaks:
        assert find_pii(text) == ["email", "credit_card", "phone"]
        card = re.search(r"\d{4} \d{4} \d{4} \d{4}", text).group().replace(" ", "")  # type: ignore[union-attr]
        assert luhn_valid(card)
        # What the SDK sends by default still shows the processor that PII was there.
        assert "[REDACTED_CREDIT_CARD]" in redact(text)


def test_luhn_completion_of_known_numbers() -> None:
    assert scenarios.luhn_complete("7992739871") == "79927398713"
    assert scenarios.luhn_complete("411111111111111") == "4111111111111111"


def test_provider_outage_fails_one_model_only(model: TrafficModel) -> None:
    calls, start, end = run(model, "provider-outage", duration_s=100.0)
    before, during, after = split(calls, start, end)
    target = [c for c in during if c["request_model"] == scenarios.OUTAGE_MODEL and not c["cache_hit"]]
    others = [c for c in during if c["request_model"] != scenarios.OUTAGE_MODEL]
    assert len(target) > 200 and error_ratio(target) == 1.0
    assert error_ratio(others) < 0.03
    assert error_ratio([c for c in before if c["request_model"] == scenarios.OUTAGE_MODEL]) < 0.05
    assert error_ratio([c for c in after if c["request_model"] == scenarios.OUTAGE_MODEL]) < 0.05


def test_ab_regression_treatment_is_slower_and_less_confident() -> None:
    calls = generate_calls(10_000, 5, scenario="ab-regression")
    arms: dict[str, list[dict]] = {"control": [], "treatment": []}
    for c in calls:
        if c.get("experiment_id") == "prompt-v2" and c["status"] == "ok":
            arms[c["variant"]].append(c)
    assert min(len(a) for a in arms.values()) > 1_000
    assert {c["service"] for a in arms.values() for c in a} == {scenarios.AB_SERVICE}
    latency = {k: statistics.fmean(c["latency_ms"] for c in v) for k, v in arms.items()}
    confidence = {k: statistics.fmean(c["confidence"] for c in v) for k, v in arms.items()}
    assert latency["treatment"] / latency["control"] == pytest.approx(1.4, rel=0.1)
    assert confidence["treatment"] < confidence["control"] - 0.08


def test_scenario_calls_are_labelled_and_baseline_calls_are_not() -> None:
    calls = generate_calls(2_000, 6, scenario="latency-spike")
    labelled = [c for c in calls if c.get("labels")]
    assert labelled and all(c["labels"] == {"sim_scenario": "latency-spike"} for c in labelled)
    assert statistics.fmean(c["latency_ms"] > 2_000 for c in labelled) > 0.9


def test_names_parse_from_repeats_and_commas() -> None:
    assert scenarios.parse_names(["latency-spike,pii-leak", "error-burst", "pii-leak"]) == [
        "latency-spike", "pii-leak", "error-burst",
    ]
    with pytest.raises(ValueError, match="unknown scenario"):
        scenarios.parse_names(["latency-spike,nope"])


def test_every_scenario_has_a_description_and_a_window_that_ends() -> None:
    assert len(scenarios.SCENARIOS) == 11
    for scenario in scenarios.SCENARIOS.values():
        assert len(scenario.description) > 20
        assert 0 < scenario.duration_s <= 120 and scenario.start_s >= 20


def test_window_override() -> None:
    moved = scenarios.get("error-burst", start_s=5, duration_s=10)
    assert moved.window_ms(1_000) == (6_000, 16_000)
