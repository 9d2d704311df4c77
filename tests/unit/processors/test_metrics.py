"""Worker metrics as Prometheus scrapes them: bounded label sets, batch-fed histograms, one catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmpulse.processors.core.series_totals import SECONDS_BUCKETS
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics import OTHER, BatchHistogram, BoundedLabels, WorkerMetrics
from llmpulse.processors.session_fence import SessionFence

FOLDED = "llmpulse_metric_series_folded_total"


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (sample name, sorted labels): what Prometheus would store."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _folded_counter(registry: CollectorRegistry) -> Counter:
    return Counter(FOLDED, "folded samples", ["metric"], registry=registry)


def _bucket_counts(values_s: list[float]) -> np.ndarray:
    """Non-cumulative counts per bucket (``le`` semantics: a value equal to a bound belongs to it), +Inf last."""
    counts = np.zeros(len(SECONDS_BUCKETS) + 1, dtype=np.int64)
    for value in values_s:
        index = next((i for i, bound in enumerate(SECONDS_BUCKETS) if value <= bound), len(SECONDS_BUCKETS))
        counts[index] += 1
    return counts


def test_bounded_labels_fold_beyond_the_cap_into_other() -> None:
    registry = CollectorRegistry()
    folded = _folded_counter(registry)
    requests = Counter("llm_requests_total", "calls", ["service", "model"], registry=registry)
    bounded = BoundedLabels(requests, max_series=2, folded=folded, name="llm_requests_total")
    bounded.child("a", "m1").inc(3)
    bounded.child("b", "m1").inc(4)
    bounded.child("c", "m2").inc(5)  # third label set: over the cap
    bounded.child("d", "m3").inc(6)
    bounded.child("a", "m1").inc(1)  # known sets keep working after the cap is reached
    assert bounded.series() == 2
    assert bounded.known() == [("a", "m1"), ("b", "m1")]
    samples = _scrape(registry)
    assert samples[("llm_requests_total", (("model", "m1"), ("service", "a")))] == 4
    assert samples[("llm_requests_total", (("model", "m1"), ("service", "b")))] == 4
    assert samples[("llm_requests_total", (("model", OTHER), ("service", OTHER)))] == 11
    assert not any(dict(labels).get("service") in ("c", "d") for _, labels in samples)
    assert samples[(FOLDED, (("metric", "llm_requests_total"),))] == 2


def test_bounded_labels_cache_children() -> None:
    registry = CollectorRegistry()
    gauge_family = Counter("x_total", "x", ["k"], registry=registry)
    bounded = BoundedLabels(gauge_family, max_series=10, folded=_folded_counter(registry), name="x_total")
    assert bounded.child("v") is bounded.child("v")


def _histogram(max_series: int) -> tuple[CollectorRegistry, BatchHistogram]:
    registry = CollectorRegistry()
    histogram = BatchHistogram(
        "llm_duration_seconds", "latency", ["service", "model"], max_series, _folded_counter(registry)
    )
    registry.register(histogram)
    return registry, histogram


def test_batch_histogram_scrapes_like_a_prometheus_histogram() -> None:
    values = [0.01, 0.05, 0.05, 0.3, 1.0, 1.2, 2.0, 9.0, 29.0, 31.0, 120.0]
    registry, histogram = _histogram(max_series=10)
    half = len(values) // 2
    histogram.add(("svc", "gpt"), _bucket_counts(values[:half]), sum(values[:half]))  # two batches
    histogram.add(("svc", "gpt"), _bucket_counts(values[half:]), sum(values[half:]))

    reference_registry = CollectorRegistry()
    reference = Histogram(
        "llm_duration_seconds", "latency", ["service", "model"], buckets=SECONDS_BUCKETS.tolist(),
        registry=reference_registry,
    )
    for value in values:
        reference.labels("svc", "gpt").observe(value)

    ours, theirs = _scrape(registry), _scrape(reference_registry)
    theirs = {key: value for key, value in theirs.items() if not key[0].endswith("_created")}
    assert ours.keys() >= theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value), key


def test_batch_histogram_known_answers() -> None:
    registry, histogram = _histogram(max_series=10)
    histogram.add(("svc", "gpt"), _bucket_counts([0.05, 0.2, 3.0, 100.0]), 103.25)
    samples = _scrape(registry)
    labels = (("model", "gpt"), ("service", "svc"))

    def bucket(le: str) -> float:
        return samples[("llm_duration_seconds_bucket", (("le", le), *labels))]

    assert bucket("0.05") == 1  # the bound itself is inside (le)
    assert bucket("0.1") == 1
    assert bucket("0.25") == 2
    assert bucket("3.0") == 3
    assert bucket("30.0") == 3
    assert bucket("+Inf") == 4
    assert samples[("llm_duration_seconds_count", labels)] == 4
    assert samples[("llm_duration_seconds_sum", labels)] == 103.25


def test_batch_histogram_folds_new_series_beyond_the_cap() -> None:
    registry, histogram = _histogram(max_series=1)
    histogram.add(("a", "m"), _bucket_counts([0.1]), 0.1)
    histogram.add(("b", "m"), _bucket_counts([0.1, 0.2, 0.3]), 0.6)
    histogram.add(("c", "m"), _bucket_counts([5.0]), 5.0)
    samples = _scrape(registry)
    other = (("model", OTHER), ("service", OTHER))
    assert samples[("llm_duration_seconds_count", other)] == 4
    assert samples[("llm_duration_seconds_sum", other)] == pytest.approx(5.6)
    assert samples[("llm_duration_seconds_count", (("model", "m"), ("service", "a")))] == 1
    assert ("llm_duration_seconds_count", (("model", "m"), ("service", "b"))) not in samples
    assert samples[(FOLDED, (("metric", "llm_duration_seconds"),))] == 4  # samples, not label sets


def test_worker_metrics_register_once_and_share_the_cap() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, max_series=1)
    metrics.requests.child("svc", "gpt", "openai", "ok").inc(2)
    metrics.requests.child("svc2", "gpt", "openai", "ok").inc(1)
    metrics.duration.add(("svc", "gpt", "openai"), _bucket_counts([0.5]), 0.5)
    samples = _scrape(registry)
    assert samples[(FOLDED, (("metric", "llmpulse_llm_requests_total"),))] == 1
    assert samples[("llmpulse_llm_request_duration_seconds_count", (("model", "gpt"), ("provider", "openai"),
                                                                    ("service", "svc")))] == 1
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics(registry)  # a second catalogue on the same registry is a wiring bug, caught early


def test_state_writes_count_each_record_once_however_often_they_are_reported() -> None:
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry, 10))
    for written, pending in ((0, 0), (120, 40), (120, 0), (300, 5)):  # the timer reports the writer's totals
        exporter.record_state_writes(written, pending)
    scraped = _scrape(registry)
    assert scraped[("llmpulse_state_records_written_total", ())] == 300
    assert scraped[("llmpulse_state_records_pending", ())] == 5


def test_a_stall_counts_once_and_the_doubt_shows_until_the_group_assigns_again() -> None:
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry, 10))
    now, generation = [1000.0], [3]
    fence = SessionFence(8.0, lambda: generation[0], clock=lambda: now[0])
    fence.arm()

    def tick() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # the timer reports, then a scrape
        now[0] += 0.25
        in_doubt = fence.in_doubt()  # as the timer asks: first, so a stall not yet noted is counted now
        exporter.record_stalls(fence.stalls, in_doubt)
        return _scrape(registry)

    assert tick()[("llmpulse_worker_stalls_total", ())] == 0
    now[0] += 15.0  # SIGSTOP past the session
    for _ in range(3):  # reported on every tick while in doubt: still one stall
        scraped = tick()
        assert scraped[("llmpulse_worker_stalls_total", ())] == 1
        assert scraped[("llmpulse_worker_in_doubt", ())] == 1
    generation[0] += 1  # the group assigned partitions again
    scraped = tick()
    assert scraped[("llmpulse_worker_stalls_total", ())] == 1 and scraped[("llmpulse_worker_in_doubt", ())] == 0
