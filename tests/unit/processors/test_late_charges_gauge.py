"""llmpulse_budget_late_charges: what the budget ledgers could not charge to an hour, day or month, on /metrics."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry

from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.fleet import FleetConfig, FleetEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.metrics import WorkerMetrics
from tests.support.calls import decoded

NOW = int(time.time() * 1000)
HOUR_MS = 3_600_000


def _calls(at_ms: int, count: int, first: int) -> CallColumns:
    rows = [{"event_id": f"e{first + i}", "timestamp_ms": at_ms, "service": "checkout", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 400.0, "cost_micros": 3000}
            for i in range(count)]
    return decoded(rows, NOW)


def test_calls_too_late_for_their_hour_are_counted_per_ledger() -> None:
    engine = PartitionEngine(0, EngineConfig(), Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model()))
    engine.process(_calls(NOW, 5, 0), 1, NOW)
    engine.process(_calls(NOW - 3 * HOUR_MS, 4, 5), 2, NOW)  # older than the previous hour: its hour is gone
    fleet = FleetEngine(FleetConfig())
    for at in (NOW, NOW - 3 * HOUR_MS):  # a summary, then one from a partition three hours behind
        fleet.ledger.apply_batch(np.array([at]), np.array(["checkout"], dtype=object), np.array([None], dtype=object),
                                 np.array(["gpt-4o"], dtype=object), np.array([3000]))
    registry = CollectorRegistry()

    MetricsExporter(WorkerMetrics(registry)).refresh([engine], fleet, NOW)

    # one charge per late call and period: the hour only (the previous day and month are still open)
    assert registry.get_sample_value("llmpulse_budget_late_charges", {"ledger": "partitions"}) == 4
    assert registry.get_sample_value("llmpulse_budget_late_charges", {"ledger": "fleet"}) == 1
