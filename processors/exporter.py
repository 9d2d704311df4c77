"""Moves what the engines computed into the Prometheus metrics: totals per batch, gauges per refresh."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.columns import STATUSES
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.summary import SeriesTotals
from llmpulse.processors.metrics import WorkerMetrics

_MICROS_PER_USD = 1_000_000


class MetricsExporter:
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def record_batch(self, totals: Iterable[SeriesTotals], accepted: int) -> None:
        m = self.metrics
        m.batches.inc()
        m.events.inc(accepted)
        for t in totals:
            service, model, provider = t.series
            for code, count in enumerate(t.status_counts.tolist()):
                if count:
                    m.requests.child(service, model, provider, STATUSES[code]).inc(count)
            for error_type, count in t.errors_by_type.items():
                m.errors.child(service, model, provider, error_type).inc(count)
            for kind, count in (("input", t.input_tokens), ("output", t.output_tokens), ("cached", t.cached_tokens)):
                if count:
                    m.tokens.child(service, model, provider, kind).inc(count)
            if t.cost_micros:
                m.cost.child(service, model, provider).inc(t.cost_micros / _MICROS_PER_USD)
            if t.cache_hits:
                m.cache_hits.child(service, model).inc(t.cache_hits)
            if t.no_answer:
                m.no_answer.child(service, model).inc(t.no_answer)
            m.duration.add(t.series, t.latency_buckets, t.latency_sum_s)
            if t.ttft_buckets.sum():
                m.ttft.add(t.series, t.ttft_buckets, t.ttft_sum_s)

    def record_alerts(self, events: Iterable[AlertEvent]) -> None:
        for event in events:
            self.metrics.alerts_emitted.child(event.rule, event.severity, event.status).inc()

    def record_dead_letter(self, reason_code: str) -> None:
        self.metrics.dead_letter.child(reason_code).inc()

    def refresh(self, engines: Iterable[PartitionEngine], now_ms: int) -> None:
        """Recompute sliding-window gauges (called on a timer and before each scrape)."""
        m = self.metrics
        firing: Tally[tuple[str, str]] = Tally()
        for engine in engines:
            for row in engine.summary(now_ms):
                for window, values in row.items():
                    if not isinstance(values, dict):
                        continue
                    for name, label in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
                        value = values.get(name)
                        if value is not None:
                            m.latency_quantile.child(row["service"], row["model"], window, label).set(value)
            for alert in engine.policy.active():
                firing[(alert.rule, alert.severity)] += 1
        for labels in set(m.alerts_firing.known()) | set(firing):
            m.alerts_firing.child(*labels).set(firing.get(labels, 0))
