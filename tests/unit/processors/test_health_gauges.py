"""The health and cost-per-1k gauges: set per service on refresh, NaN once the service has no calls in the window."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client import CollectorRegistry

from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.metrics import WorkerMetrics
from tests.support.calls import decoded

NOW = int(time.time() * 1000)


def test_gauges_follow_the_health_window() -> None:
    engine = PartitionEngine(0, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    rows = [{"event_id": f"e{i}", "timestamp_ms": NOW - 1000, "service": "checkout", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 400.0, "cost_micros": 3000} for i in range(50)]
    calls = decoded(rows, NOW)
    engine.process(calls, 1, NOW)
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry))

    exporter.refresh([engine], None, NOW)
    labels = {"service": "checkout"}
    assert registry.get_sample_value("llmpulse_health_score", labels) == 100.0
    assert registry.get_sample_value("llmpulse_cost_per_1k_requests_usd", labels) == pytest.approx(3.0)

    exporter.refresh([engine], None, NOW + 10 * 60_000)  # the calls left the 5-minute window: unknown, not stale
    assert math.isnan(registry.get_sample_value("llmpulse_health_score", labels) or 0.0)
    assert math.isnan(registry.get_sample_value("llmpulse_cost_per_1k_requests_usd", labels) or 0.0)


def test_gauges_refresh_with_at_most_a_tenth_of_the_time() -> None:
    engine = PartitionEngine(0, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry))
    exporter.refresh([engine], None, NOW)
    took = registry.get_sample_value("llmpulse_gauge_refresh_seconds") or 0.0
    assert took > 0
    rows = [{"event_id": f"e{i}", "timestamp_ms": NOW, "service": "search", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 400.0, "cost_micros": 3000} for i in range(50)]
    calls = decoded(rows, NOW)
    engine.process(calls, 1, NOW)
    labels = {"service": "search"}

    exporter.refresh([engine], None, NOW + int(took * 1000 * 10) - 1)  # too soon: the gauges stay as they were
    assert registry.get_sample_value("llmpulse_health_score", labels) is None
    exporter.refresh([engine], None, NOW + int(took * 1000 * 10) + 1)
    assert registry.get_sample_value("llmpulse_health_score", labels) == 100.0


def test_once_every_window_gauge_is_full_only_the_series_holding_a_gauge_are_refreshed() -> None:
    """A cap of 2 label sets per metric and 4 series: series a and b take the error-ratio gauge's two label sets
    (a also the latency gauges'), so a later refresh computes only a and b. c and d get no gauge, their samples
    count as folded, and a's latency gauge still follows its calls."""
    engine = PartitionEngine(0, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry, max_series=2))

    def feed(services: list[str], latency_ms: float, offset: int, now: int) -> None:
        rows = [{"event_id": f"e{offset}-{s}-{i}", "timestamp_ms": now - 1000, "service": s, "provider": "openai",
                 "request_model": "gpt-4o", "status": "ok" if i % 10 else "error", "latency_ms": latency_ms,
                 "ttft_ms": latency_ms / 4} for s in services for i in range(30)]
        engine.process(decoded(rows, now), offset, now)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model": "gpt-4o", **labels})

    feed(["a", "b"], 400.0, 1, NOW)
    exporter.refresh_now([engine], None, NOW)  # a and b take the gauges' label sets
    feed(["a", "b", "c", "d"], 900.0, 2, NOW + 1000)
    exporter.refresh_now([engine], None, NOW + 1000)

    latency_p95 = sample("llmpulse_llm_latency_seconds", service="a", window="1m", quantile="0.95")
    assert latency_p95 == pytest.approx(0.9, rel=0.02)  # the 900 ms calls fed after the first refresh
    for service in ("a", "b"):
        assert sample("llmpulse_llm_error_ratio", service=service, window="5m") == pytest.approx(0.1)
    for service in ("c", "d"):
        assert sample("llmpulse_llm_error_ratio", service=service, window="5m") is None
    folded = registry.get_sample_value("llmpulse_metric_series_folded_total", {"metric": "llmpulse_llm_error_ratio"})
    assert folded == 2  # c and d, left out of the second refresh
    other = {"service": "other", "model": "other", "window": "other"}
    assert registry.get_sample_value("llmpulse_llm_error_ratio", other) is None  # not computed, so not folded in
