"""SDK -> real Kafka -> worker: health score, cost per 1,000 requests and a KPI (cost per follow) in the API, the
gauges and ``llmpulse report``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmpulse.producers import Pulse
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(180)


def test_health_cost_per_1k_and_cost_per_follow_everywhere(worker_factory) -> None:  # type: ignore[no-untyped-def]
    worker: WorkerProcess = worker_factory(LLMPULSE_KPIS=json.dumps([{"name": "cost_per_follow", "outcome": "follow"}]))
    with Pulse(service="persona", bootstrap_servers=worker.bootstrap, topic=worker.topic("calls"),
               linger_ms=20) as pulse:
        for i in range(40):  # $0.002 a call, 1 in 10 earned a follow
            pulse.record(provider="openai", request_model="gpt-4o", latency_ms=300.0, input_tokens=100,
                         output_tokens=50, cost_micros=2000, labels={"outcome": "follow"} if i % 10 == 0 else {})
        assert pulse.flush(15) == 0
    assert wait_until(lambda: worker.metric("llmpulse_events_processed_total") >= 40, 30, step=0.3)

    _, summary = worker.get("/api/metrics")
    (health,) = [row for row in summary["health"] if row["service"] == "persona"]
    assert health["score"] == 100.0 and health["requests"] == 40
    assert health["components"]["errors"]["score"] == 1.0 and health["components"]["quality"] is None
    assert health["cost_per_1k_requests_usd"] == pytest.approx(2.0)
    day = next(row for row in summary["kpis"] if row["period"] == "day")
    assert (day["name"], day["outcomes"]) == ("cost_per_follow", 4)
    assert day["cost_per_outcome_usd"] == pytest.approx(40 * 0.002 / 4)

    assert worker.metric("llmpulse_health_score", service="persona") == 100.0
    assert worker.metric("llmpulse_cost_per_1k_requests_usd", service="persona") == pytest.approx(2.0)

    printed = subprocess.run([sys.executable, "-m", "llmpulse.cli", "report", "day", "--url", worker.url,
                              "--format", "markdown"], capture_output=True, text=True, timeout=60, check=True)
    assert "| cost_per_follow | follow | $0.0800 | 4 | $0.0200 |" in printed.stdout
    assert "| persona | 100 | 100% | 100% |" in printed.stdout
