"""The AI health score: each component on known inputs, missing signals renormalised, and the engines' view."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.health import COMPONENTS, HealthConfig, ServiceSignals, health_score, ramp, service_health
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.sketch import LatencySketch
from llmpulse.processors.core.slots import series_parts
from llmpulse.processors.loaders import read_injection_model
from tests.support.calls import decoded

CONFIG = HealthConfig()
HEALTHY = ServiceSignals(requests=1000, failed=0, latency_count=1000, p95_s=0.8, p99_s=1.5, guard_flags=0,
                         drift_judged=True, confidence_change_pct=2.0, ratings=100, accuracy=0.95)


def test_ramp_is_one_within_the_threshold_and_zero_at_twice_it() -> None:
    assert ramp(0.0, 2.0) == ramp(2.0, 2.0) == 1.0
    assert ramp(3.0, 2.0) == pytest.approx(0.5)
    assert ramp(4.0, 2.0) == ramp(40.0, 2.0) == 0.0
    assert ramp(3.0, 2.0, zero_at=3.0) == pytest.approx(0.75)
    assert ramp(0.0, 0.0) == 1.0 and ramp(0.1, 0.0) == 0.0  # a zero threshold tolerates nothing


def test_a_healthy_service_scores_100_with_every_component() -> None:
    health = health_score(HEALTHY, CONFIG)
    assert health.score == 100.0
    assert all(health.components[name] is not None for name in COMPONENTS)


def test_known_inputs_give_the_documented_weighted_mean() -> None:
    signals = ServiceSignals(requests=1000, failed=75, latency_count=1000, p95_s=3.0, p99_s=4.0, guard_flags=15)
    health = health_score(signals, CONFIG)
    c = health.components
    assert c["latency"] is not None and c["latency"].score == pytest.approx(0.5)  # p95 3 s: halfway from 2 s to 4 s
    assert c["errors"] is not None and c["errors"].score == pytest.approx(0.5)  # 7.5%: halfway from 5% to 10%
    assert c["guard"] is not None and c["guard"].score == pytest.approx(0.5)  # 1.5 flags per 100 calls
    assert c["drift"] is None and c["quality"] is None  # no drift verdict, no feedback: skipped
    assert health.score == pytest.approx(100 * (0.25 * 0.5 + 0.30 * 0.5 + 0.15 * 0.5) / (0.25 + 0.30 + 0.15))


def test_latency_takes_the_worse_of_p95_and_p99() -> None:
    slow_tail = HEALTHY._replace(p95_s=1.0, p99_s=7.5)  # p99 halfway from 5 s to 10 s
    component = health_score(slow_tail, CONFIG).components["latency"]
    assert component is not None and component.score == pytest.approx(0.5)


def test_no_traffic_has_no_score_and_no_components() -> None:
    health = health_score(ServiceSignals(), CONFIG)
    assert health.score is None
    assert health.components == dict.fromkeys(COMPONENTS)
    assert health.as_dict() == {"score": None, "components": dict.fromkeys(COMPONENTS)}
    # Drift state outlives the traffic window: it alone does not make a score for a silent service.
    assert health_score(ServiceSignals(drift_judged=True, confidence_change_pct=30.0), CONFIG).score is None


def test_missing_quality_is_skipped_and_the_rest_renormalised() -> None:
    errors = HEALTHY._replace(failed=100, ratings=0)  # 10% errors: errors component 0, no feedback
    health = health_score(errors, CONFIG)
    assert health.components["quality"] is None
    assert health.score == pytest.approx(100 * (1 - 0.30 / 0.85))  # only latency, errors, drift, guard weigh
    too_few = health_score(errors._replace(ratings=CONFIG.min_ratings - 1, accuracy=0.1), CONFIG)
    assert too_few.score == health.score  # ratings below min_ratings are not a signal


def test_few_calls_skip_rate_components_but_keep_drift() -> None:
    signals = ServiceSignals(requests=5, failed=5, latency_count=5, p95_s=9.0, p99_s=9.0, drift_judged=True,
                             confidence_change_pct=-15.0)
    health = health_score(signals, CONFIG)
    assert [n for n, c in health.components.items() if c is not None] == ["drift"]
    assert health.score == pytest.approx(50.0)  # |-15%| is halfway from 10% to 20%


def test_drift_takes_the_worse_of_confidence_and_drifted_features() -> None:
    drifted = HEALTHY._replace(confidence_change_pct=5.0, drifted_psi=0.3)  # PSI halfway from 0.2 to 0.4
    component = health_score(drifted, CONFIG).components["drift"]
    assert component is not None and component.score == pytest.approx(0.5)
    assert component.measured == {"confidence_change_pct": 5.0, "drifted_psi": 0.3}


def test_quality_uses_accuracy_when_labelled_else_the_mean_score() -> None:
    labelled = health_score(HEALTHY._replace(accuracy=0.7, mean_score=0.99), CONFIG).components["quality"]
    assert labelled is not None and labelled.score == pytest.approx(0.5)  # shortfall 0.3: halfway from 0.2 to 0.4
    scored = health_score(HEALTHY._replace(accuracy=math.nan, mean_score=0.2), CONFIG).components["quality"]
    assert scored is not None and scored.score == pytest.approx(0.0) and scored.measured == {"mean_score": 0.2}


def test_weights_are_settings_and_zero_weights_give_no_score() -> None:
    errors_only = HealthConfig(weights={"errors": 0.3})  # a component left out weighs 0
    assert health_score(HEALTHY._replace(failed=75), errors_only).score == pytest.approx(50.0)
    nothing = HealthConfig(weights=dict.fromkeys(COMPONENTS, 0.0))
    assert health_score(HEALTHY, nothing).score is None


def test_weights_are_read_only_and_name_known_components() -> None:
    config = HealthConfig(weights={"errors": 1.0})
    with pytest.raises(TypeError):
        config.weights["errors"] = 2.0  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown components"):
        HealthConfig(weights={"error": 1.0})
    hash(config)  # still hashable: the mapping is left out of the hash


# ---- from an engine's state -------------------------------------------------------------------------------------
NOW = int(time.time() * 1000)


def _feed(engine: PartitionEngine, rows: list[dict[str, object]], offset: int) -> None:
    calls = decoded(rows, NOW)
    engine.process(calls, offset, NOW)


def _row(i: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_id": f"e{i}-{overrides.get('request_model', 'm')}", "timestamp_ms": NOW - 1000, "service": "checkout",
        "provider": "openai", "request_model": "gpt-4o", "status": "ok", "latency_ms": 500.0, "input_tokens": 200,
        "output_tokens": 100, "cost_micros": 2000,
    }
    row.update(overrides)
    return row


def test_service_health_from_an_engine_pools_models_and_prices_per_1k_requests() -> None:
    engine = PartitionEngine(0, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    _feed(engine, [_row(i) for i in range(90)], offset=1)
    _feed(engine, [_row(i, request_model="gpt-4o-mini", status="error", cost_micros=500, latency_ms=3000.0)
                   for i in range(10)], offset=2)
    _feed(engine, [_row(i, service="search", timestamp_ms=NOW - 1_200_000) for i in range(30)], offset=3)  # 20 min ago

    by_service = {row["service"]: row for row in service_health([engine], NOW, CONFIG)}

    checkout = by_service["checkout"]
    assert checkout["window"] == "5m" and checkout["requests"] == 100
    assert checkout["cost_usd"] == pytest.approx((90 * 2000 + 10 * 500) / 1e6)
    assert checkout["cost_per_1k_requests_usd"] == pytest.approx((90 * 2000 + 10 * 500) / 1e6 / 100 * 1000)
    models = {m["model"]: m for m in checkout["models"]}
    assert models["gpt-4o"]["cost_per_1k_requests_usd"] == pytest.approx(2.0)
    assert models["gpt-4o-mini"]["cost_per_1k_requests_usd"] == pytest.approx(0.5)
    components = checkout["components"]
    assert components["errors"]["measured"]["error_ratio"] == pytest.approx(0.10)
    assert components["errors"]["score"] == 0.0
    # Pooled over both models, the slowest 10% are the 3 s calls: p95 = 3 s, halfway from 2 s to 4 s (sketch: 1%).
    assert components["latency"]["measured"]["p95_s"] == pytest.approx(3.0, rel=0.01)
    assert components["latency"]["score"] == pytest.approx(0.5, abs=0.02)
    assert components["quality"] is None
    assert 0 < checkout["score"] < 100
    # Calls older than the window: the service is known, without a score or a price.
    search = by_service["search"]
    assert search["score"] is None and search["requests"] == 0 and search["cost_per_1k_requests_usd"] is None


def test_service_latency_and_totals_are_those_of_its_series_merged_across_engines() -> None:
    """The columnar gathering (one sketch union for every service) gives what merging each series' window
    sketches, then the service's, gives; a service whose series sit in two engines is pooled over both."""
    rng = np.random.default_rng(5)
    engines = [PartitionEngine(p, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
               for p in range(2)]
    for offset, engine in enumerate(engines, start=1):
        rows = [_row(i, service=f"svc-{rng.integers(0, 4)}", request_model=f"model-{rng.integers(0, 3)}",
                     provider=("openai", "anthropic")[int(rng.integers(0, 2))],
                     latency_ms=float(rng.lognormal(6.5, 1.2)), timestamp_ms=NOW - int(rng.integers(0, 900_000)),
                     status="error" if rng.random() < 0.1 else "ok")
                for i in range(400 * offset)]
        _feed(engine, rows, offset)

    by_service = {row["service"]: row for row in service_health(engines, NOW, CONFIG)}

    window = CONFIG.window_s
    for service, row in by_service.items():
        windows = [engine.latency.window(series, window, NOW) for engine in engines
                   for series in engine.latency.series() if series_parts(series)[0] == service]
        merged = LatencySketch.merge_all([w for w in windows if w.count])
        requests = sum(engine.traffic.totals(series, window, NOW)["requests"] for engine in engines
                       for series in engine.traffic.series() if series_parts(series)[0] == service)
        assert row["requests"] == requests > 0
        latency = row["components"]["latency"]
        assert latency is not None
        p95, p99 = merged.quantiles((0.95, 0.99))
        assert latency["measured"] == {"p95_s": pytest.approx(p95, rel=1e-12), "p99_s": pytest.approx(p99, rel=1e-12)}
