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
