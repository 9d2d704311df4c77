"""The /metrics page a worker writes is prometheus_client's ``generate_latest``, byte for byte, scrape after scrape:
every kind of family, label values that need escaping, values of every form, and label sets kept from one scrape
applied to the next one's changed values."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmpulse.processors.core.series_totals import SECONDS_BUCKETS
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.metrics_text import MetricsText

AWKWARD = ['plain', 'quote " inside', "back\\slash", "new\nline", "ünïcödé ✓", "", "a,b=c{d}"]
VALUES = [0.0, -0.0, 1.0, 3, 0.1, 1234567.0, 12345678.9, 1e-9, -2.5, float("inf"), float("-inf"), float("nan"),
          2.0**53, 7e22]


class _Stamped(Collector):
    """A custom collector whose samples carry timestamps and every kind of value."""

    def __init__(self) -> None:
        self.values = list(VALUES)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("custom_gauge", "doc with \\ backslash\nand a newline", labels=["k", "le"])
        for i, value in enumerate(self.values):
            family.add_metric([AWKWARD[i % len(AWKWARD)], str(i)], value, timestamp=1_700_000_000.123 + i)
        yield family


def _registry() -> tuple[CollectorRegistry, WorkerMetrics, _Stamped, Counter, Gauge]:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, max_series=3)
    counter = Counter("awkward_total", "labels that need escaping", ["k"], registry=registry)
    gauge = Gauge("values", "every form of value", ["k"], registry=registry)
    Histogram("plain_seconds", "a client histogram", ["k"], registry=registry).labels("x").observe(0.3)
    Summary("plain_summary_seconds", "a summary", registry=registry).observe(2.0)
    Info("build", "an info metric", registry=registry).info({"version": "1.2.3", "commit": 'a"b'})
    stamped = _Stamped()
    registry.register(stamped)
    for i, text in enumerate(AWKWARD):
        counter.labels(text).inc(i + 1)
    for i, value in enumerate(VALUES):
        gauge.labels(f"v{i}").set(value)
    for service in ("chat", "search", "faq", "beyond-the-cap"):
        metrics.requests.child(service, "gpt-4o", "openai", "ok").inc(3)
        metrics.duration.add((service, "gpt-4o", "openai"),
                             np.bincount(np.searchsorted(SECONDS_BUCKETS, [0.2, 0.2, 7.0]),
                                         minlength=len(SECONDS_BUCKETS) + 1), 7.4)
    return registry, metrics, stamped, counter, gauge


def test_the_page_is_generate_latest_byte_for_byte() -> None:
    registry, *_ = _registry()
    assert MetricsText().render(registry) == generate_latest(registry)


def test_label_sets_kept_between_scrapes_carry_each_scrape_s_own_values() -> None:
    registry, metrics, stamped, counter, gauge = _registry()
    page = MetricsText()
    first = page.render(registry)
    counter.labels(AWKWARD[1]).inc(5)
    gauge.labels("v3").set(-0.0)
    gauge.labels("v4").set(float("nan"))
    stamped.values.reverse()
    metrics.duration.add(("chat", "gpt-4o", "openai"), np.ones(len(SECONDS_BUCKETS) + 1, dtype=np.int64), 100.0)
    metrics.requests.child("new-service", "gpt-4o", "openai", "ok").inc()  # folds: beyond the cap of 3
    second = page.render(registry)
    assert second != first
    assert second == generate_latest(registry)


def test_a_page_whose_kept_label_sets_overflow_starts_them_over_and_stays_exact() -> None:
    registry, _, _, counter, _ = _registry()
    page = MetricsText(max_kept=5)  # far fewer than one scrape's label sets: cleared before every scrape
    for scrape in range(3):
        counter.labels(f"new {scrape}").inc()
        assert page.render(registry) == generate_latest(registry)
