"""Figures a worker exports, by value: SDK -> real broker -> real worker -> /metrics and the alerts topic.

100 calls of which 30 decline to answer and 12 come from a cache give exactly those counts and ratios, and a
``no_answer_rate`` alert carrying the observed 30 %; streamed calls with known times to first token fill the
TTFT histogram's buckets exactly. (The ratios and percentiles on many more inputs: tests/unit/processors/core/
test_answer_ratios.py and test_ttft_percentiles.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from llmpulse.processors.core.series_totals import SECONDS_BUCKETS
from llmpulse.producers import Pulse
from tests.support.kafka import read_alert_records
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(120)
DECLINED, CACHED, CALLS = 30, 12, 100
TTFT_MS = np.arange(1, 121) * 25.0  # 25 ms .. 3 s, across the histogram's buckets
UNSTREAMED = 40


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker that has absorbed the calls of both tests."""
    worker = WorkerProcess(kafka_bootstrap, tmp_path_factory.mktemp("figures")).start()
    try:
        with Pulse(service="faq", bootstrap_servers=kafka_bootstrap, topic=worker.topic("calls"),
                   linger_ms=20) as pulse:
            for i in range(CALLS):
                pulse.record(provider="openai", request_model="gpt-4o", latency_ms=400.0 + i, input_tokens=120,
                             output_tokens=40, no_answer=i < DECLINED, cache_hit=i >= CALLS - CACHED)
            for i, ttft in enumerate(TTFT_MS):
                pulse.record(service="chat", provider="openai", request_model="gpt-4o", latency_ms=ttft + 500.0,
                             ttft_ms=float(ttft), input_tokens=120, output_tokens=40)
                if i < UNSTREAMED:
                    pulse.record(service="chat", provider="openai", request_model="gpt-4o", latency_ms=700.0,
                                 input_tokens=120, output_tokens=40)
            assert pulse.flush(15) == 0
        total = CALLS + TTFT_MS.size + UNSTREAMED
        assert wait_until(lambda: worker.metric("llmpulse_events_processed_total") >= total, 30, step=0.3), (
            worker.log_tail(30))
        yield worker
    finally:
        worker.stop()


def test_declined_and_cached_answers_are_exported_and_alerted_by_value(worker: WorkerProcess) -> None:
    faq = {"service": "faq", "model": "gpt-4o"}
    assert worker.metric("llmpulse_llm_requests_total", **faq) == CALLS
    assert worker.metric("llmpulse_llm_no_answer_total", **faq) == DECLINED
    assert worker.metric("llmpulse_llm_cache_hits_total", **faq) == CACHED
    assert worker.metric("llmpulse_no_answer_ratio", **faq, window="5m") == DECLINED / CALLS
    assert worker.metric("llmpulse_cache_hit_ratio", **faq, window="5m") == CACHED / CALLS
    assert worker.metric("llmpulse_no_answer_ratio", service="chat", window="5m") == 0.0

    alerts = read_alert_records(worker.bootstrap, worker.topic("alerts"), timeout=30,
                                until=lambda v: any(a["rule"] == "no_answer_rate" for a in v))
    [alert] = [a for a in alerts if a["rule"] == "no_answer_rate"]
    assert (alert["status"], alert["severity"], alert["service"], alert["model"]) == (
        "firing", "WARNING", "faq", "gpt-4o")
    assert alert["observed"] == DECLINED / CALLS and alert["threshold"] == 0.2 and alert["window"] == "5m"
    assert "'I don't know' rate 30.0% over 5m" in alert["summary"]
    assert worker.metric("llmpulse_alerts_emitted_total", rule="no_answer_rate", status="firing") == 1


def test_time_to_first_token_histogram_holds_the_known_times(worker: WorkerProcess) -> None:
    name = "llmpulse_llm_time_to_first_token_seconds"
    chat = {"service": "chat", "model": "gpt-4o", "provider": "openai"}
    seconds = TTFT_MS / 1000.0

    assert worker.metric(f"{name}_count", **chat) == TTFT_MS.size  # calls not streamed have no first token
    assert worker.metric(f"{name}_sum", **chat) == pytest.approx(seconds.sum(), rel=1e-9)
    for bound in SECONDS_BUCKETS:
        assert worker.metric(f"{name}_bucket", **chat, le=str(bound)) == np.count_nonzero(seconds <= bound), bound
    assert worker.metric("llmpulse_llm_request_duration_seconds_count", **chat) == TTFT_MS.size + UNSTREAMED


def test_counters_carry_no_created_series(worker: WorkerProcess) -> None:
    """Each counter child's ``_created`` line is one more series per label set (~20k of a 10k-series worker's
    scrape) that no rule or dashboard reads; the worker leaves them out."""
    status, text = worker.get("/metrics")
    assert status == 200 and "llmpulse_llm_requests_total{" in text
    assert [line for line in text.splitlines() if "_created" in line.split("{", 1)[0]] == []
