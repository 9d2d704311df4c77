"""Window gauges at more series than the per-metric cap: the series holding gauges keep being refreshed, the rest are
counted as folded and not computed (a refresh's cost follows the cap, not the number of series)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from llmpulse.processors.core.drift_monitor import DriftConfig
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.metrics import WorkerMetrics
from tests.support.calls import decoded

NOW = int(time.time() * 1000)
CAP = 5
SERVICES = 30
FOLDED = "llmpulse_metric_series_folded_total"


def _calls(services: range, status: str, at_ms: int, offset: int, engine: PartitionEngine) -> None:
    rows = [{"event_id": f"e{offset}-{s}-{i}", "timestamp_ms": at_ms, "service": f"svc-{s:02d}", "provider": "openai",
             "request_model": "gpt-4o", "status": status, "latency_ms": 300.0, "ttft_ms": 100.0}
            for s in services for i in range(4)]
    engine.process(decoded(rows, at_ms), offset, at_ms)


def _error_ratios(registry: CollectorRegistry) -> dict[str, float]:
    return {sample.labels["service"]: sample.value
            for metric in registry.collect() if metric.name == "llmpulse_llm_error_ratio"
            for sample in metric.samples}


def test_series_beyond_the_cap_are_folded_while_the_held_ones_stay_fresh() -> None:
    engine = PartitionEngine(0, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry, max_series=CAP))
    _calls(range(SERVICES), "ok", NOW - 2000, 1, engine)

    exporter._refresh([engine], None, NOW)  # the first refresh fills the cap, first come first held
    held = {service for service in _error_ratios(registry) if service != "other"}
    assert len(held) == CAP
    folded = registry.get_sample_value(FOLDED, {"metric": "llmpulse_llm_error_ratio"}) or 0.0

    _calls(range(SERVICES), "error", NOW - 1000, 2, engine)  # half of every service's calls now fail
    exporter._refresh([engine], None, NOW)
    ratios = _error_ratios(registry)
    assert {service: ratios[service] for service in held} == dict.fromkeys(held, 0.5)  # refreshed
    assert set(ratios) - {"other"} == held  # no new series behind the cap
    assert registry.get_sample_value(FOLDED, {"metric": "llmpulse_llm_error_ratio"}) == folded + SERVICES - CAP


def test_drift_gauges_show_each_series_judged_figures() -> None:
    config = EngineConfig(drift=DriftConfig(reference_size=200, block_size=100, min_current=40))
    engine = PartitionEngine(0, config, Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    rows = [{"event_id": f"d{i}", "timestamp_ms": NOW - 1000, "service": "search", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 300.0 + i % 7, "confidence": 0.8,
             "input_tokens": 100 + i % 13, "output_tokens": 20} for i in range(400)]
    engine.process(decoded(rows, NOW), 1, NOW)
    registry = CollectorRegistry()
    MetricsExporter(WorkerMetrics(registry))._refresh([engine], None, NOW)
    figures = engine.drift.figures("search\x1fgpt-4o")
    for feature in ("confidence", "latency", "tokens"):
        labels = {"service": "search", "model": "gpt-4o", "feature": feature}
        assert registry.get_sample_value("llmpulse_distribution_psi", labels) == figures[f"{feature}_psi"]
        assert registry.get_sample_value("llmpulse_distribution_ks_statistic", labels) == figures[f"{feature}_ks"]
    change = registry.get_sample_value("llmpulse_confidence_drift_ratio", {"service": "search", "model": "gpt-4o"})
    assert change == figures["confidence_change_pct"] / 100.0
