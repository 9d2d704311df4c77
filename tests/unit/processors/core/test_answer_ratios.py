"""The no-answer and cache-hit ratios by value: N calls of which K declined ("I don't know") and C came from a
cache, through the partition engine (window totals, the ``no_answer_rate`` rule) and the exporter (the counters
and gauges Prometheus scrapes)."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.metrics import WorkerMetrics
from tests.support.calls import decoded

NOW = int(time.time() * 1000)
WINDOW = {"service": "faq", "model": "gpt-4o", "window": "5m"}


@pytest.fixture(scope="module")
def shared() -> tuple[Pricer, GuardMonitor]:
    return Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model())


def _calls(n: int, declined: int, cached: int, batch: int = 0) -> CallColumns:
    """``n`` fast, cheap calls to faq/gpt-4o: the first ``declined`` answer "I don't know", the last ``cached``
    come from a cache (the two overlap when they add up to more than ``n``)."""
    rows = [
        {"event_id": f"{batch}-{i}", "timestamp_ms": NOW - 1000, "service": "faq", "provider": "openai",
         "request_model": "gpt-4o", "status": "ok", "latency_ms": 400.0 + i, "input_tokens": 120,
         "output_tokens": 40, "no_answer": i < declined, "cache_hit": i >= n - cached}
        for i in range(n)
    ]
    return decoded(rows, NOW)


def _no_answer_alerts(engine: PartitionEngine, batches: list[CallColumns]) -> list:  # type: ignore[type-arg]
    fired = []
    for offset, calls in enumerate(batches):
        fired += [a for a in engine.process(calls, offset=offset, now_ms=NOW).alerts if a.rule == "no_answer_rate"]
    return fired


@pytest.mark.parametrize(("sizes", "declined", "cached"), [
    ((60, 40), 30, 12),  # two records: the window sums them
    ((250,), 0, 250),
    ((73,), 73, 0),
    ((7,), 2, 3),  # below the rule's minimum the ratios are still exported
])
def test_engine_and_gauges_give_the_exact_share_of_declined_and_cached_answers(
    shared: tuple[Pricer, GuardMonitor], sizes: tuple[int, ...], declined: int, cached: int
) -> None:
    engine = PartitionEngine(0, EngineConfig(), *shared)
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry))
    left_declined, left_cached = declined, cached
    for offset, size in enumerate(sizes):
        k, c = min(size, left_declined), min(size, left_cached)
        left_declined, left_cached = left_declined - k, left_cached - c
        outcome = engine.process(_calls(size, k, c, batch=offset), offset=offset, now_ms=NOW)
        exporter.record_batch(outcome.totals, outcome.accepted)
    n = sum(sizes)

    [row] = engine.summary(NOW)
    rates = row["rates"]
    assert (rates["window"], rates["requests"]) == ("5m", n)
    assert rates["no_answer_ratio"] == declined / n
    assert rates["cache_hit_ratio"] == cached / n

    exporter.refresh([engine], None, NOW)
    sample = registry.get_sample_value
    assert sample("llmpulse_no_answer_ratio", WINDOW) == declined / n
    assert sample("llmpulse_cache_hit_ratio", WINDOW) == cached / n
    calls_of = {"service": "faq", "model": "gpt-4o"}
    assert (sample("llmpulse_llm_no_answer_total", calls_of) or 0) == declined
    assert (sample("llmpulse_llm_cache_hits_total", calls_of) or 0) == cached


@pytest.mark.parametrize("declined", [21, 35, 100])
def test_no_answer_rate_fires_above_a_fifth_with_the_observed_ratio(shared: tuple[Pricer, GuardMonitor],
                                                                   declined: int) -> None:
    engine = PartitionEngine(0, EngineConfig(), *shared)

    [alert] = _no_answer_alerts(engine, [_calls(100, declined, 0)])

    assert (alert.status, alert.severity, alert.service, alert.model, alert.provider) == (
        "firing", "WARNING", "faq", "gpt-4o", "openai")
    assert alert.observed == declined / 100 and alert.threshold == 0.2 and alert.window == "5m"
    assert alert.summary == f"'I don't know' rate {declined / 100:.1%} over 5m for faq/gpt-4o/openai"
    assert alert.mitigation


def test_the_ratio_counts_over_every_record_of_the_window(shared: tuple[Pricer, GuardMonitor]) -> None:
    engine = PartitionEngine(0, EngineConfig(), *shared)
    # 10 of 60 (17%: quiet), then 20 of 40 (too few calls alone): the rule judges 30 of 100 in its window
    fired = _no_answer_alerts(engine, [_calls(60, 10, 0, batch=0), _calls(40, 20, 0, batch=1)])

    assert [(a.status, a.observed) for a in fired] == [("firing", 0.3)]


@pytest.mark.parametrize(("n", "declined"), [
    (100, 20),  # exactly a fifth: the rule wants more
    (100, 0),
    (49, 49),  # every answer declined, but under the rule's 50 calls
])
def test_no_answer_rate_stays_quiet_at_a_fifth_or_on_too_few_calls(shared: tuple[Pricer, GuardMonitor], n: int,
                                                                   declined: int) -> None:
    engine = PartitionEngine(0, EngineConfig(), *shared)

    assert _no_answer_alerts(engine, [_calls(n, declined, 0)]) == []
    assert engine.summary(NOW)[0]["rates"]["no_answer_ratio"] == declined / n


def test_cache_hits_alone_raise_no_alert(shared: tuple[Pricer, GuardMonitor]) -> None:
    engine = PartitionEngine(0, EngineConfig(), *shared)
    outcome = engine.process(_calls(200, 0, 200), offset=0, now_ms=NOW)

    assert outcome.alerts == []
    assert engine.summary(NOW)[0]["rates"]["cache_hit_ratio"] == 1.0
