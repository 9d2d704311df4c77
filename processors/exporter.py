"""Moves what the engines computed into the Prometheus metrics: totals per batch, gauges per refresh."""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.circuit import CircuitTransition
from llmpulse.processors.core.columns import STATUSES, CallColumns
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.fleet import FleetEngine
from llmpulse.processors.core.guard_monitor import GuardVerdicts
from llmpulse.processors.core.health import HealthConfig, service_health
from llmpulse.processors.core.incidents import IncidentEvent
from llmpulse.processors.core.series_totals import SeriesTotals
from llmpulse.processors.core.slots import series_parts
from llmpulse.processors.metrics import BoundedLabels, WorkerMetrics
from llmpulse.processors.wire.otlp import SpanCounts

_MICROS_PER_USD = 1_000_000
_CIRCUIT_CODE = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
REFRESH_SHARE = 0.1  # of the worker's time, at most, for recomputing window gauges


class MetricsExporter:
    def __init__(self, metrics: WorkerMetrics, health: HealthConfig | None = None) -> None:
        self.metrics = metrics
        self.health = health or HealthConfig()
        self._lag_seen: set[tuple[str, int]] = set()
        self._next_refresh_ms = 0
        self._state_written = 0  # the state writer's total when last recorded
        self._stalls = 0  # the session fence's total when last recorded

    def record_batch(self, totals: Iterable[SeriesTotals], accepted: int, records: int = 1) -> None:
        """Totals of one run of ``records`` Kafka records (core/run_plan.py) that held ``accepted`` calls."""
        m = self.metrics
        m.batches.inc(records)
        m.events.inc(accepted)
        for t in totals:
            service, model, provider = t.series
            for code, count in enumerate(t.status_counts.tolist()):
                if count:
                    m.requests.child(service, model, provider, STATUSES[code], samples=count).inc(count)
            for error_type, count in t.errors_by_type.items():
                m.errors.child(service, model, provider, error_type, samples=count).inc(count)
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

    def record_guard(self, verdicts: GuardVerdicts, calls: CallColumns) -> None:
        """Guard counts; the SDK writes one service per batch, so a batch's service labels them all."""
        if not verdicts.checked:
            return
        m = self.metrics
        services = set(calls.service.tolist())
        service = services.pop() if len(services) == 1 else "mixed"
        for severity, count in verdicts.injection_by_severity.items():
            m.injection.child(service, severity).inc(count)
        for kind, count in verdicts.pii_by_kind.items():
            m.pii.child(service, kind).inc(count)
        for level, count in verdicts.hallucination_by_level.items():
            m.hallucination.child(service, str(calls.model[0]), level).inc(count)
        toxic = int(verdicts.toxic.sum())
        if toxic:
            m.unsafe.child(service, "toxicity").inc(toxic)

    def record_unpriced(self, models: dict[str, int]) -> None:
        for model, count in models.items():
            self.metrics.unpriced.child(model).inc(count)

    def record_skipped_spans(self, skipped: SpanCounts) -> None:
        """OTLP spans of one request that did not become calls (wire/otlp.py), by reason."""
        counter = self.metrics.otlp_spans_skipped
        if skipped.not_genai:
            counter.child("not_genai").inc(skipped.not_genai)
        if skipped.not_model_call:
            counter.child("not_a_model_call").inc(skipped.not_model_call)

    def record_alerts(self, events: Iterable[AlertEvent]) -> None:
        for event in events:
            self.metrics.alerts_emitted.child(event.rule, event.severity, event.status).inc()
            if event.rule == "security_incident" and event.status == "firing":
                labels = event.labels
                self.metrics.security_incidents.child(event.service or labels.get("user", "unknown"),
                                                      labels.get("type", "unknown")).inc()

    def record_incidents(self, events: Iterable[IncidentEvent]) -> None:
        for event in events:
            self.metrics.incidents_emitted.child(event.status, event.priority, event.scope).inc()

    def record_circuit(self, transition: CircuitTransition) -> None:
        self.metrics.circuit.child(transition.provider, transition.model).set(_CIRCUIT_CODE[transition.state])

    def record_lag(self, end_offsets: Mapping[Any, int], read_offsets: Mapping[Any, int],
                   assigned: set[tuple[str, int]]) -> None:
        """Records between the last one read and the log end, per assigned partition (0 for lost ones)."""
        lag = self.metrics.lag
        for tp, end in list(end_offsets.items()):
            if (tp.topic, tp.partition) in assigned:
                read = read_offsets.get(tp)
                behind = end if read is None else end - read - 1
                lag.labels(tp.topic, str(tp.partition)).set(max(0, behind))
        for topic, partition in list(self._lag_seen - assigned):
            lag.labels(topic, str(partition)).set(0)
        self._lag_seen = assigned | self._lag_seen

    def record_dead_letter(self, reason_code: str) -> None:
        self.metrics.dead_letter.child(reason_code).inc()

    def record_rewind(self, topic: str) -> None:
        self.metrics.source_rewinds.child(topic).inc()

    def record_state_writes(self, written: int, pending: int) -> None:
        """The state writer's running total of records written, and how many the broker has not acknowledged."""
        self.metrics.state_written.inc(max(0, written - self._state_written))
        self._state_written = max(written, self._state_written)
        self.metrics.state_pending.set(pending)

    def record_stalls(self, stalls: int, in_doubt: bool) -> None:
        """The session fence's running total of stalls, and whether the worker is in doubt now."""
        self.metrics.stalls.inc(max(0, stalls - self._stalls))
        self._stalls = max(stalls, self._stalls)
        self.metrics.in_doubt.set(1 if in_doubt else 0)

    def record_ready(self, ready: bool, recovery_left: int) -> None:
        self.metrics.ready.set(1 if ready else 0)
        self.metrics.recovery_left.set(recovery_left)

    def refresh(self, engines: Iterable[PartitionEngine], fleet: FleetEngine | None, now_ms: int) -> None:
        """Recompute sliding-window gauges (called before each scrape, web.py), with at most
        ``REFRESH_SHARE`` of the worker's time: after a refresh that took t seconds, the next waits t /
        REFRESH_SHARE. A few hundred series refresh on every scrape, and at 10,000 series (~0.3 s a refresh, ~1.3 s
        the first, which creates the label children) one every 15 s does too; a slower refresh, or faster scrapes,
        get the last figures until the pacing allows another."""
        if now_ms < self._next_refresh_ms:
            return
        took = self.refresh_now(engines, fleet, now_ms)
        self._next_refresh_ms = now_ms + int(took / REFRESH_SHARE * 1000)

    def refresh_now(self, engines: Iterable[PartitionEngine], fleet: FleetEngine | None, now_ms: int) -> float:
        """Recompute the window gauges whatever the pacing; returns the seconds it took."""
        began = time.perf_counter()
        self._refresh(list(engines), fleet, now_ms)
        took = time.perf_counter() - began
        self.metrics.gauge_refresh.set(took)
        return took

    def _refresh(self, engines: list[PartitionEngine], fleet: FleetEngine | None, now_ms: int) -> None:
        m = self.metrics
        firing: Tally[tuple[str, str]] = Tally()
        self._refresh_health(engines, now_ms)
        m.budget_late.child("partitions").set(sum(engine.budget.late_dropped for engine in engines))
        for engine in engines:
            self._refresh_series(engine, now_ms)
            self._refresh_budgets(engine.budget.snapshot())
            for row in engine.experiment_results():
                m.effect_size.child(row["experiment"], row["variant"], row["metric"]).set(row["effect_size"])
            for alert in engine.policy.active():
                firing[(alert.rule, alert.severity)] += 1
        if fleet is not None:
            self._refresh_budgets(fleet.ledger.snapshot())
            projection = fleet.ledger.projection(now_ms)
            m.budget_projected.child("global", "all").set(projection["projected_micros"] / _MICROS_PER_USD)
            m.circuit_late.set(fleet.circuits.late_outcomes)
            m.budget_late.child("fleet").set(fleet.ledger.late_dropped)
            for alert in fleet.policy.active():
                firing[(alert.rule, alert.severity)] += 1
            incidents: Tally[tuple[str, str]] = Tally(
                (incident.priority, incident.scope) for incident in fleet.incidents.active()
            )
            _set_all(m.incidents_open, incidents)
        else:  # only the fleet stage's owner reports incidents
            _set_all(m.incidents_open, Tally())
        _set_all(m.alerts_firing, firing)

    def _refresh_series(self, engine: PartitionEngine, now_ms: int) -> None:
        """Each series' window and drift gauges, computed only for the series a gauge can hold (``_held``)."""
        m = self.metrics
        windowed = (m.latency_quantile, m.ttft_quantile, m.error_ratio, m.no_answer_ratio, m.cache_hit_ratio)
        for row in engine.summary(now_ms, _held(engine.latency.series(), windowed)):
            service, model = row["service"], row["model"]
            for gauge, windows in ((m.latency_quantile, row), (m.ttft_quantile, row["ttft"])):
                for window, values in windows.items():
                    if not isinstance(values, dict) or "p95" not in values:
                        continue
                    for name, label in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
                        if values.get(name) is not None:
                            gauge.child(service, model, window, label).set(values[name])
            rates = row["rates"]
            m.error_ratio.child(service, model, rates["window"]).set(rates["error_ratio"])
            m.no_answer_ratio.child(service, model, rates["window"]).set(rates["no_answer_ratio"])
            m.cache_hit_ratio.child(service, model, rates["window"]).set(rates["cache_hit_ratio"])
        for key in _held(engine.drift.series(), (m.confidence_drift, m.psi, m.ks)):
            service, model = series_parts(key)[:2]
            drift = engine.drift.figures(key)
            change = drift.get("confidence_change_pct")
            if isinstance(change, float) and not math.isnan(change):
                m.confidence_drift.child(service, model).set(change / 100.0)
            for feature in ("confidence", "latency", "tokens"):
                if f"{feature}_psi" in drift:
                    m.psi.child(service, model, feature).set(drift[f"{feature}_psi"])
                    m.ks.child(service, model, feature).set(drift[f"{feature}_ks"])

    def _refresh_health(self, engines: list[PartitionEngine], now_ms: int) -> None:
        """Health score and spend per 1,000 requests per service; NaN (unknown) for a service without a figure now,
        including one no longer seen, so a quiet service does not keep its last score."""
        m = self.metrics
        score: dict[tuple[str, ...], float] = dict.fromkeys(m.health_score.known(), math.nan)
        cost: dict[tuple[str, ...], float] = dict.fromkeys(m.cost_per_1k.known(), math.nan)
        for row in service_health(engines, now_ms, self.health):
            key = (row["service"],)
            score[key] = math.nan if row["score"] is None else row["score"]
            per_1k = row["cost_per_1k_requests_usd"]
            cost[key] = math.nan if per_1k is None else per_1k
        for key, value in score.items():
            m.health_score.child(*key).set(value)
        for key, value in cost.items():
            m.cost_per_1k.child(*key).set(value)

    def _refresh_budgets(self, snapshot: list[dict]) -> None:  # type: ignore[type-arg]
        m = self.metrics
        for row in snapshot:
            labels = (row["scope"], str(row["key"]), row["period"])
            m.budget_spent.child(*labels).set(row["spent_micros"] / _MICROS_PER_USD)
            if row.get("limit_micros"):
                m.budget_limit.child(*labels).set(row["limit_micros"] / _MICROS_PER_USD)
                m.budget_used.child(*labels).set(row["used_ratio"])


def _set_all(gauge: BoundedLabels, values: Tally[tuple[str, str]]) -> None:
    for labels in set(gauge.known()) | set(values):
        gauge.child(*labels).set(values.get(labels, 0))


def _held(series: list[str], gauges: tuple[BoundedLabels, ...]) -> list[str]:
    """The series (service, model, ...) some of ``gauges`` can hold: every one while a gauge is below its series
    cap, else those a gauge has a child of. The others are not computed: the cap, not the number of series, bounds a
    refresh (at 10,000 series one took seconds, holding the event loop). Their samples count as folded, one per
    series and gauge."""
    if not all(gauge.full() for gauge in gauges):
        return series
    heads = set().union(*(gauge.heads() for gauge in gauges))
    held = [s for s in series if series_parts(s)[:2] in heads]
    for gauge in gauges:
        gauge.fold(len(series) - len(held))
    return held
