"""Every Prometheus metric a worker exports, declared once, on a registry that is passed in.

Label cardinality is bounded: each metric accepts at most ``max_series`` distinct label sets; further
label values fold into ``other`` and ``llmpulse_metric_series_folded_total{metric}`` counts those samples,
so one misbehaving producer cannot blow up Prometheus. Label children are cached so the hot path does
one dict lookup per (metric, label set) per batch, never per call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from llmpulse.processors.core.series_totals import SECONDS_BUCKETS

OTHER = "other"
_BOUNDS = (*(str(b) for b in SECONDS_BUCKETS), "+Inf")  # the histograms' ``le`` labels


class BoundedLabels:
    """Caches label children of one metric and folds label sets beyond the cap into ``other``."""

    def __init__(self, metric: MetricWrapperBase, max_series: int, folded: Counter, name: str) -> None:
        self.metric = metric
        self.max_series = max_series
        self._children: dict[tuple[str, ...], MetricWrapperBase] = {}
        self._heads: set[tuple[str, ...]] = set()  # the (service, model) of every child (``heads``)
        self._folded = folded.labels(metric=name)
        self._other: MetricWrapperBase | None = None

    def child(self, *values: str, samples: int = 1) -> MetricWrapperBase:
        """The label child for ``values``; ``samples`` is how many samples the caller is about to record,
        counted as folded when the label set goes to ``other``."""
        child = self._children.get(values)
        if child is not None:
            return child
        if len(self._children) >= self.max_series:
            self._folded.inc(samples)
            if self._other is None:
                self._other = self.metric.labels(*([OTHER] * len(values)))
            return self._other
        child = self._children[values] = self.metric.labels(*values)
        self._heads.add(values[:2])
        return child

    def full(self) -> bool:
        """No new label set gets a child of its own any more."""
        return len(self._children) >= self.max_series

    def heads(self) -> AbstractSet[tuple[str, ...]]:
        """The (service, model) every child's label set starts with (read-only: the gauge's own set)."""
        return self._heads

    def fold(self, samples: int) -> None:
        """Count samples folded without being looked up (the caller skipped label sets the cap left out)."""
        self._folded.inc(samples)

    def series(self) -> int:
        return len(self._children)

    def known(self) -> list[tuple[str, ...]]:
        return list(self._children)


class BatchHistogram(Collector):
    """A Prometheus histogram fed whole bucket-count vectors per batch (one numpy add, not N observes).

    Counts are non-cumulative per bucket of ``SECONDS_BUCKETS`` plus +Inf; collect() cumulates them. The same
    series cap as BoundedLabels applies.
    """

    def __init__(self, name: str, doc: str, labels: Sequence[str], max_series: int, folded: Counter) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self.max_series = max_series
        self._folded = folded.labels(metric=name)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}

    def add(self, label_values: tuple[str, ...], bucket_counts: np.ndarray, total: float) -> None:
        entry = self._series.get(label_values)
        if entry is None:
            if len(self._series) >= self.max_series:
                self._folded.inc(int(bucket_counts.sum()))
                label_values = (OTHER,) * len(self.labels)
                entry = self._series.get(label_values)
            if entry is None:
                entry = self._series[label_values] = (np.zeros(len(SECONDS_BUCKETS) + 1, dtype=np.int64), [0.0])
        entry[0][:] += bucket_counts
        entry[1][0] += total

    def collect(self) -> Iterator[Metric]:
        """The samples ``HistogramMetricFamily.add_metric`` would add (each bucket, then count and sum), made here
        with one label dict per series: add_metric zips the labels anew for each of a series' 17 samples."""
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        bucket, count, total_name = f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum"
        append = family.samples.append
        for label_values, (counts, total) in list(self._series.items()):
            labels = dict(zip(self.labels, label_values, strict=True))
            cumulative = np.cumsum(counts).tolist()
            for bound, value in zip(_BOUNDS, cumulative, strict=True):
                append(Sample(bucket, {**labels, "le": bound}, value))
            append(Sample(count, labels, cumulative[-1]))
            append(Sample(total_name, labels, total[0]))
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labels)


class WorkerMetrics:
    """The metric catalogue (docs/metrics.md). Names follow Prometheus conventions: base units, _total."""

    def __init__(self, registry: CollectorRegistry, max_series: int = 2000) -> None:
        self.registry = registry
        self.max_series = max_series
        self.folded = Counter(
            "llmpulse_metric_series_folded_total",
            "Samples whose label set exceeded the per-metric series cap and was folded into 'other'",
            ["metric"],
            registry=registry,
        )
        call = ["service", "model", "provider"]
        counter = self._counter
        self.requests = counter("llmpulse_llm_requests_total", "LLM calls processed", [*call, "status"])
        self.errors = counter("llmpulse_llm_errors_total", "Failed LLM calls by error.type", [*call, "error_type"])
        self.tokens = counter("llmpulse_llm_tokens_total", "Tokens by type (input, output, cached)", [*call, "type"])
        self.cost = counter("llmpulse_llm_cost_usd_total", "Spend in US dollars", call)
        self.cache_hits = counter("llmpulse_llm_cache_hits_total", "Calls answered from cache", ["service", "model"])
        self.no_answer = self._counter("llmpulse_llm_no_answer_total", "'I don't know' answers", ["service", "model"])
        self.duration = self._histogram(
            "llmpulse_llm_request_duration_seconds", "LLM call latency", call
        )
        self.ttft = self._histogram(
            "llmpulse_llm_time_to_first_token_seconds", "Time to first streamed token", call
        )
        self.latency_quantile = self._gauge(
            "llmpulse_llm_latency_seconds",
            "Latency quantile from the 1%-accurate sketch over a sliding window",
            ["service", "model", "window", "quantile"],
        )
        self.ttft_quantile = self._gauge(
            "llmpulse_llm_time_to_first_token_quantile_seconds",
            "Time-to-first-token quantile of streamed calls from the 1%-accurate sketch over a sliding window",
            ["service", "model", "window", "quantile"],
        )
        gauge = self._gauge
        sm, smw = ["service", "model"], ["service", "model", "window"]
        self.error_ratio = gauge("llmpulse_llm_error_ratio", "Share of failed calls over a sliding window", smw)
        self.no_answer_ratio = gauge("llmpulse_no_answer_ratio", "Share of declined answers over a window", smw)
        self.cache_hit_ratio = gauge("llmpulse_cache_hit_ratio", "Share of cached answers over a window", smw)
        self.injection = counter("llmpulse_prompt_injection_attempts_total", "Prompt-injection attempts",
                                 ["service", "severity"])
        self.hallucination = counter("llmpulse_hallucination_flags_total", "Unhedged high-risk claims",
                                     ["service", "model", "risk"])
        self.pii = counter("llmpulse_pii_detections_total", "Calls carrying PII, by kind", ["service", "pii_type"])
        self.unsafe = counter("llmpulse_unsafe_content_total", "Unsafe content hits", ["service", "category"])
        self.security_incidents = counter("llmpulse_security_incidents_total", "Security incidents",
                                          ["service", "type"])
        budget = ["scope", "key", "period"]
        self.budget_spent = gauge("llmpulse_budget_spent_usd", "Spend so far in the budget period", budget)
        self.budget_limit = gauge("llmpulse_budget_limit_usd", "Configured budget limit", budget)
        self.budget_used = gauge("llmpulse_budget_used_ratio", "Spent / limit (1 = exhausted)", budget)
        self.budget_projected = gauge("llmpulse_budget_projected_month_usd", "Month-end spend at the current rate",
                                      ["scope", "key"])
        self.budget_late = gauge("llmpulse_budget_late_charges",
                                 "Charges left out of an hour, day or month as too late (older than its previous "
                                 "bucket), one per call and period", ["ledger"])
        self.confidence_drift = gauge("llmpulse_confidence_drift_ratio",
                                      "Signed relative change of mean confidence vs the reference", sm)
        self.psi = gauge("llmpulse_distribution_psi", "Population stability index vs the reference",
                         [*sm, "feature"])
        self.ks = gauge("llmpulse_distribution_ks_statistic", "Kolmogorov-Smirnov statistic vs the reference",
                        [*sm, "feature"])
        self.health_score = gauge("llmpulse_health_score",
                                  "AI health score 0-100 over the health window (NaN: no traffic or no signal)",
                                  ["service"])
        self.cost_per_1k = gauge("llmpulse_cost_per_1k_requests_usd",
                                 "Spend per 1,000 requests over the health window", ["service"])
        self.circuit = gauge("llmpulse_provider_circuit_state", "0 closed, 1 half-open, 2 open",
                             ["provider", "model"])
        self.circuit_late = Gauge(
            "llmpulse_circuit_late_outcomes",
            "Call outcomes the fleet's circuits left out as late (older than their provider/model had already seen)",
            registry=registry,
        )
        self.effect_size = gauge("llmpulse_experiment_effect_size", "Cohen's d of a variant against control",
                                 ["experiment", "variant", "metric"])
        self.alerts_emitted = self._counter(
            "llmpulse_alerts_emitted_total", "Alert lifecycle events emitted", ["rule", "severity", "status"]
        )
        self.alerts_firing = self._gauge("llmpulse_alerts_firing", "Member alerts currently firing",
                                         ["rule", "severity"])
        self.incidents_emitted = self._counter(
            "llmpulse_incidents_emitted_total", "Incident lifecycle events emitted (fleet stage owner)",
            ["status", "priority", "scope"],
        )
        self.incidents_open = self._gauge("llmpulse_incidents_open", "Incidents open or acknowledged, fleet-wide",
                                          ["priority", "scope"])
        self.dead_letter = self._counter(
            "llmpulse_dead_letter_total", "Inputs refused and sent to the dead-letter topic", ["reason"]
        )
        self.source_rewinds = self._counter(
            "llmpulse_source_rewinds_total",
            "Seeks back to the persisted cursor because records before an arriving one never reached the worker",
            ["topic"],
        )
        self.unpriced = self._counter(
            "llmpulse_unpriced_calls_total", "Calls with no cost and no known price", ["model"]
        )
        self.otlp_spans_skipped = self._counter(
            "llmpulse_otlp_spans_skipped_total", "OTLP spans read that are not a GenAI model call", ["reason"]
        )
        self.events = Counter(
            "llmpulse_events_processed_total", "LLM calls accepted by the worker", registry=registry
        )
        self.batches = Counter(
            "llmpulse_batches_processed_total", "Kafka records (micro-batches) processed", registry=registry
        )
        self.ready = Gauge("llmpulse_worker_ready", "1 once assigned partitions are recovered", registry=registry)
        self.recovery_left = Gauge(
            "llmpulse_state_recovery_offsets_left",
            "State changelog offsets still to read before the assigned partitions are recovered (0 when ready)",
            registry=registry,
        )
        self.stalls = Counter(
            "llmpulse_worker_stalls_total",
            "Times the whole worker process stood still for more than half its consumer session (CPU throttling, "
            "swapping, a paused VM): each time it acted for no partition and wrote no state until the group "
            "confirmed or reassigned them",
            registry=registry,
        )
        self.in_doubt = Gauge(
            "llmpulse_worker_in_doubt",
            "1 while the worker, after standing still, waits for the group to confirm or reassign its partitions",
            registry=registry,
        )
        self.gauge_refresh = Gauge(
            "llmpulse_gauge_refresh_seconds",
            "How long the last refresh of the window gauges took; the next one waits ten times as long",
            registry=registry,
        )
        self.lag = Gauge(
            "llmpulse_consumer_lag_records", "Records behind the log end", ["topic", "partition"], registry=registry
        )
        self.state_written = Counter(
            "llmpulse_state_records_written_total", "State records (blobs, tombstones, cursors, run plans) written "
            "to the state changelog", registry=registry
        )
        self.state_pending = Gauge(
            "llmpulse_state_records_pending", "State records written and not yet acknowledged by the broker",
            registry=registry
        )

    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> BoundedLabels:
        return BoundedLabels(Counter(name, doc, labels, registry=self.registry), self.max_series, self.folded, name)

    def _gauge(self, name: str, doc: str, labels: Sequence[str]) -> BoundedLabels:
        return BoundedLabels(Gauge(name, doc, labels, registry=self.registry), self.max_series, self.folded, name)

    def _histogram(self, name: str, doc: str, labels: Sequence[str]) -> BatchHistogram:
        histogram = BatchHistogram(name, doc, labels, self.max_series, self.folded)
        self.registry.register(histogram)
        return histogram
