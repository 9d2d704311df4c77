"""One partition's analytics: every monitor's state, the alert policy, and what a batch changes.

The faust agent hands each decoded batch to the engine of its source partition with the record's offset;
the engine updates state (skipping what that offset already changed, see keyed_state.py) and returns alert
events, per-series totals for the exporter and a summary for the fleet stage (fleet.py). State leaves
through ``drain_state`` as (store key, bytes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any

import numpy as np

from llmpulse.processors.core.alert_policy import AlertConfig, AlertEvent, AlertPolicy, Observation
from llmpulse.processors.core.columns import DENIED, ERROR, FILTERED, NO_COST, RATE_LIMITED, TIMEOUT, CallColumns
from llmpulse.processors.core.drift_monitor import DriftConfig, DriftMonitor
from llmpulse.processors.core.experiments import ExperimentConfig, ExperimentMonitor
from llmpulse.processors.core.feedback_join import FeedbackColumns
from llmpulse.processors.core.fleet import summarize_for_fleet
from llmpulse.processors.core.guard_monitor import AttemptLog, GuardMonitor, GuardMonitorConfig, GuardVerdicts
from llmpulse.processors.core.keyed_state import KeyedState, PersistedState, SourceCursor
from llmpulse.processors.core.latency import QUANTILES, SERIES_LABELS, LatencyConfig, LatencyMonitor, window_label
from llmpulse.processors.core.ledger import BudgetLedger, BudgetLimits, PeriodLimits, highest_crossings
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.quality import QualityConfig, QualityMonitor, RouteDecision, joined_arms
from llmpulse.processors.core.run_plan import RunPlan
from llmpulse.processors.core.savings import SavingsConfig, SavingsTracker
from llmpulse.processors.core.series_index import SeriesIndex
from llmpulse.processors.core.series_totals import SeriesTotals, totals_by_series
from llmpulse.processors.core.slots import series_key, series_parts
from llmpulse.processors.core.traffic import COLUMNS as TRAFFIC_COLUMNS
from llmpulse.processors.core.traffic import TrafficConfig, TrafficMonitor

POLICY_KEY = "policy"
BUDGET_NAMESPACE = "budget"  # the ledger's buckets persist as budget/<period>/<start_ms>, plus budget/meta
BUDGET_KEY = "ledger"  # where the whole ledger was persisted as one blob (still restored, then deleted)
ATTEMPTS_KEY = "attempts"
CURSOR_KEY = "cursor/next"
RUN_PLAN_KEY = "cursor/runs"  # where runs of records end (run_plan.py), written before their output is sent
# Calls are keyed by service: a partition's service spend is whole, its users' a share (kept for /api/budgets). A
# service's limits are judged here, first; global, model and user limits by the fleet stage, which sees all.
PARTITION_SCOPES, PARTITION_ALERT_SCOPES = ("service", "user"), ("service",)


class _Json:
    """Adapter giving JSON-dict state the to_bytes shape KeyedState persists."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def to_bytes(self) -> bytes:
        return self.value.to_bytes()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    guarding: GuardMonitorConfig = field(default_factory=GuardMonitorConfig)
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)
    limits: BudgetLimits = field(default_factory=BudgetLimits)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    savings: SavingsConfig = field(default_factory=SavingsConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)


@dataclass(slots=True)
class BatchOutcome:
    alerts: list[AlertEvent]
    totals: list[SeriesTotals]
    accepted: int
    guard: GuardVerdicts
    unpriced_models: dict[str, int]
    fleet_summary: bytes
    routes: list[RouteDecision] = field(default_factory=list)  # route-back decisions (quality.py, opt-in)


@dataclass(slots=True)
class FeedbackOutcome:
    alerts: list[AlertEvent]
    fleet_summary: bytes  # the record's alert events, for incidents (and its offset, for the fleet's cursor)
    routes: list[RouteDecision]
    joined: int
    received: int


def _no_calls() -> CallColumns:
    empty = np.zeros(0, dtype=object)
    return CallColumns(**{name: empty for name, spec in CallColumns.__dataclass_fields__.items()
                          if spec.default is MISSING and spec.default_factory is MISSING})


class PartitionEngine:
    """All state derived from one source partition."""

    def __init__(self, partition: int, config: EngineConfig, pricer: Pricer, guard: GuardMonitor) -> None:
        self.partition = partition
        self.config = config
        self.pricer = pricer
        self.guard = guard
        # one integer code per (service, model, provider), shared by the monitors that judge those series
        self.series_index = SeriesIndex(SERIES_LABELS)
        self.latency = LatencyMonitor(config.latency, self.series_index)
        self.traffic = TrafficMonitor(config.traffic, self.series_index)
        self.drift = DriftMonitor(config.drift)
        self.experiments = ExperimentMonitor(config.experiments)
        self.savings = SavingsTracker(config.savings)
        self.quality = QualityMonitor(config.quality)
        self.cursor = SourceCursor()  # moved by the agent: it also covers records refused before reaching here
        self.run_plan = RunPlan()  # cut and persisted by the agent, so a replay absorbs the same runs
        # Which source topic feeds it ("" the calls topic) and the source its fleet summaries name: the store sets
        # both for engines of other topics' partitions (engine_store.py, lanes).
        self.lane = ""
        self.source = partition
        self._timer_routes: list[RouteDecision] = []  # route-back decisions of alerts the timer fired

        # Exactly-once per bucket inside the ledger: a group of records rewrites only the buckets it charged.
        self._budget = BudgetLedger(config.limits, scopes=PARTITION_SCOPES, projection=False,
                                    alert_scopes=PARTITION_ALERT_SCOPES)
        self._by_user = config.limits.user_limits != PeriodLimits()  # fleet summaries carry spend per user
        self._attempts: KeyedState[AttemptLog] = KeyedState("attempts", lambda _k: AttemptLog(), AttemptLog.from_bytes)
        self._policy: KeyedState[_Json] = KeyedState(
            "alerts",
            lambda _key: _Json(_PolicyState(AlertPolicy(config.alerts))),
            lambda blob: _Json(_PolicyState(AlertPolicy.from_dict(json.loads(blob), config.alerts))),
        )

    # ---- stream ------------------------------------------------------------------------------------
    def process(self, calls: CallColumns, offset: int, now_ms: int) -> BatchOutcome:
        """Absorb the calls of one run of records (run_plan.py), ``offset`` its last. Decisions use the batch's
        event time, so a replay of the same run decides the same."""
        event_ms = min(int(calls.timestamp_ms.max()), now_ms)
        before = dict(self.pricer.unknown_models())
        cost = self.pricer.fill_missing(calls.cost_micros, calls)
        unpriced = {m: n - before.get(m, 0) for m, n in self.pricer.unknown_models().items() if n > before.get(m, 0)}
        keys, inverse = calls.group_by("service", "model", "provider")
        series = [series_key(key) for key in keys]
        verdicts = self.guard.check(calls)
        # Calls the SDK denied were never sent: counted (traffic "denied", status metric), kept out of latency,
        # drift, experiments, savings and circuits. ``sent`` is None when the batch holds none (the usual case).
        denied = calls.status == DENIED
        sent = np.flatnonzero(~denied) if denied.any() else None
        served, served_cost, served_inverse = (calls, cost, inverse) if sent is None else (
            calls.take(sent), cost[sent], inverse[sent])

        if len(served):
            self.latency.update(series, served_inverse, served.timestamp_ms, served.latency_ms, served.ttft_ms,
                                offset, now_ms)
        self.traffic.update(series, inverse, calls.timestamp_ms, self._counts(calls, cost, verdicts), offset, now_ms)
        observations: list[Observation] = []
        model_keys, model_inverse = served.group_by("service", "model") if len(served) else ([], inverse[:0])
        model_series = [series_key(key) for key in model_keys]
        experiments = []
        if len(served):
            self.drift.update(model_series, model_inverse, {
                "confidence": served.confidence,
                "latency": served.latency_ms / 1000.0,
                "tokens": (served.input_tokens + served.output_tokens).astype(np.float64),
            }, offset, now_ms=event_ms)
            joined = self.quality.on_calls(served, offset)  # feedback that arrived before these calls joins now
            rated_experiment, rated_variant = joined_arms(joined)
            unrated = np.full(len(joined), np.nan)
            experiments = self.experiments.update(
                np.concatenate([served.experiment_id, rated_experiment]),
                np.concatenate([served.variant, rated_variant]), {
                    "latency": np.concatenate([served.latency_ms / 1000.0, unrated]),
                    "cost": np.concatenate([np.where(served_cost >= 0, served_cost / 1e6, np.nan), unrated]),
                    "confidence": np.concatenate([served.confidence, unrated]),
                    "quality": np.concatenate([np.full(len(served), np.nan), joined.score]),
                }, offset)
            observations += self.quality.observe_changed(event_ms)  # the series these calls changed
            self.savings.update(served, served_cost, offset)
        open_rules = self.policy.open_rules()
        latency = self.latency.observe_series(series, event_ms, open_rules)
        traffic = self.traffic.observe_series(series, event_ms, open_rules)
        observations += [o for i in sorted(latency.keys() | traffic.keys())
                         for o in (*latency.get(i, ()), *traffic.get(i, ()))]  # series by series, as always
        for s in model_series:
            observations += self.drift.observe(s, event_ms, open_rules=open_rules)
        for experiment in experiments:
            observations += self.experiments.observe(experiment, event_ms)
        crossings = self._budget.apply_batch(calls.timestamp_ms, calls.service, calls.user_hash, calls.model, cost,
                                             offset=offset)
        observations += [crossing.observation() for crossing in highest_crossings(crossings)]
        attempts = self._attempts.for_update(ATTEMPTS_KEY, offset)
        if attempts is not None:
            self.guard.record_attempts(attempts, calls, verdicts.injection)
            if attempts.attempts or attempts.reported:
                observations += self.guard.escalate(attempts, event_ms)
        alerts = self._decide(observations, offset)
        return BatchOutcome(
            alerts=alerts,
            totals=totals_by_series(calls, keys, inverse, cost),  # type: ignore[arg-type]
            accepted=len(calls),
            guard=verdicts,
            unpriced_models=unpriced,
            fleet_summary=summarize_for_fleet(served, served_cost, self.source, offset, alerts,
                                              by_user=self._by_user),
            routes=self.quality.routes(alerts, event_ms),
        )

    def process_feedback(self, feedback: FeedbackColumns, offset: int, now_ms: int) -> FeedbackOutcome:
        """Absorb one feedback record (on the calls topic, keyed like its calls): join, quality, experiments."""
        event_ms = min(int(feedback.timestamp_ms.max()), now_ms)
        joined = self.quality.on_feedback(feedback, offset)
        experiment, variant = joined_arms(joined)
        touched = self.experiments.update(experiment, variant, {"quality": joined.score}, offset)
        observations = self.quality.observe_changed(event_ms)
        for name in touched:
            observations += self.experiments.observe(name, event_ms)
        alerts = self._decide(observations, offset)
        summary = summarize_for_fleet(_no_calls(), np.zeros(0, dtype=np.int64), self.source, offset, alerts)
        return FeedbackOutcome(alerts, summary, self.quality.routes(alerts, event_ms), len(joined), len(feedback))

    @staticmethod
    def _counts(calls: CallColumns, cost: np.ndarray, verdicts: GuardVerdicts) -> dict[str, np.ndarray]:
        status = calls.status
        priced = cost != NO_COST
        return {
            "requests": status != DENIED,
            "denied": status == DENIED,
            "errors": status == ERROR,
            "timeouts": status == TIMEOUT,
            "rate_limited": status == RATE_LIMITED,
            "filtered": status == FILTERED,
            "cache_hits": calls.cache_hit,
            "no_answer": calls.no_answer,
            "cost_micros": np.where(priced, cost, 0),
            "priced": priced,
            "tokens": calls.input_tokens + calls.output_tokens,
            "injection": verdicts.injection,
            "hallucination": verdicts.hallucination,
            "pii": verdicts.pii,
            "toxic": verdicts.toxic,
        }

    def tick(self, now_ms: int) -> list[AlertEvent]:
        """Periodic evaluation without new data: quiet series clear, held alerts resolve, old slots go."""
        self.latency.evict(now_ms)
        self.traffic.slots.evict(now_ms)
        # idle series go after the longest window: drift state too, and the codes no monitor holds any more
        self.drift.evict(now_ms, max(self.config.latency.windows_s) * 1000)
        self.series_index.retain({*self.latency.series(), *self.traffic.series()})
        open_rules = self.policy.open_rules()
        observations = _in_order(self.latency.observe_series(self.latency.series(), now_ms, open_rules))
        observations += _in_order(self.traffic.observe_series(self.traffic.series(), now_ms, open_rules))
        observations += self.drift.observe_all(now_ms, open_rules)
        observations += self.quality.observe(now_ms)  # every series: windows move with time, not only with data
        attempts = self._attempts.get(ATTEMPTS_KEY)
        if attempts is not None and (attempts.attempts or attempts.reported):
            observations += self.guard.escalate(attempts, now_ms)
            self._attempts.touch(ATTEMPTS_KEY)
        policy = self.policy
        events = policy.observe_many(observations) + policy.tick(now_ms)
        if events:
            self._policy.touch(POLICY_KEY)
            self._rebaseline_drift(events)
            self._timer_routes += self.quality.routes(events, now_ms)
        return events

    def drain_timer_routes(self) -> list[RouteDecision]:
        """Route-back decisions for quality alerts ``tick`` fired (opt-in, quality.py); sent before ``persist``."""
        routes, self._timer_routes = self._timer_routes, []
        return routes

    def acknowledge(self, alert_id: str, actor: str, now_ms: int) -> AlertEvent | None:
        """Acknowledging is idempotent by nature, so it needs no offset stamp (and has no calls offset)."""
        event = self.policy.acknowledge(alert_id, actor, now_ms)
        if event is not None:
            self._policy.touch(POLICY_KEY)
            self._rebaseline_drift([event])
        return event

    def _decide(self, observations: list[Observation], offset: int) -> list[AlertEvent]:
        state = self._policy.for_update(POLICY_KEY, offset)
        if state is None:  # replayed record: its alerts were already decided and emitted
            return []
        events = state.value.policy.observe_many(observations)
        self._rebaseline_drift(events)
        return events

    def _rebaseline_drift(self, events: list[AlertEvent]) -> None:
        """A drift incident resolved or acknowledged: its reference starts over (see rebaseline_for_alert)."""
        for event in events:
            self.drift.rebaseline_for_alert(event)

    # ---- views ---------------------------------------------------------------------------------------
    @property
    def policy(self) -> AlertPolicy:
        return self._policy.get_or_create(POLICY_KEY).value.policy

    @property
    def budget(self) -> BudgetLedger:
        return self._budget

    def summary(self, now_ms: int, series: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Per-series figures over every configured window (for /api/metrics and gauges), of every series or of
        the given ones."""
        rows = []
        every = self.latency.series() if series is None else list(series)
        # every series' quantiles of a window at once (LatencyMonitor.window_quantiles), as merging its sketches
        windows = {}  # (label, ttft) -> (counts, quantiles) as Python lists: a row is read per series below
        for window_s in self.config.latency.windows_s:
            for ttft in (False, True):
                count, figures = self.latency.window_quantiles(every, window_s, now_ms, ttft=ttft, guards=False)
                windows[(window_label(window_s), ttft)] = (count.tolist(), figures[:, : len(QUANTILES)].tolist())
        traffic = self.traffic.window_matrix(every, self.config.traffic.window_s, now_ms).tolist()
        for i, s in enumerate(every):
            row: dict[str, Any] = dict(zip(("service", "model", "provider"), series_parts(s), strict=True))
            row["ttft"] = {}  # time to first token of the streamed calls, per window like latency
            for (label, ttft), (counts, figures) in windows.items():
                (row["ttft"] if ttft else row)[label] = _quantile_row(counts[i], figures[i])
            totals = dict(zip(TRAFFIC_COLUMNS, traffic[i], strict=True))
            n = totals["requests"] or 1
            row["rates"] = {
                "window": window_label(self.config.traffic.window_s),
                "requests": totals["requests"],
                "error_ratio": (totals["errors"] + totals["timeouts"] + totals["rate_limited"]) / n,
                "cache_hit_ratio": totals["cache_hits"] / n,
                "no_answer_ratio": totals["no_answer"] / n,
                "cost_usd": totals["cost_micros"] / 1e6,
                "tokens_per_request": totals["tokens"] / n,
                "guard": {k: totals[k] for k in ("injection", "hallucination", "pii", "toxic")},
            }
            row["drift"] = {k: _plain(v) for k, v in self.drift.figures(series_key(series_parts(s)[:2])).items()}
            rows.append(row)
        return rows

    def experiment_results(self) -> list[dict[str, Any]]:
        return [
            {"experiment": c.experiment, "variant": c.variant, "metric": c.metric, "effect_size": c.effect_size,
             "p_value": c.p_value, "control_mean": c.control_mean, "variant_mean": c.variant_mean,
             "regression": c.regression, "improvement": c.improvement, "welch_p": c.welch_p,
             "difference_interval": [c.lower, c.upper], "samples": c.samples}
            for experiment in self.experiments.experiments() for c in self.experiments.compare(experiment)
        ]

    # ---- persistence -------------------------------------------------------------------------------------
    def _states(self) -> list[PersistedState]:
        """Every namespace but the ledgers (``_ledgers``)."""
        return [self.latency.latency.state, self.latency.ttft.state, self.traffic.slots.state, self.drift.state,
                self.experiments.state, self._attempts, *self.quality.states()]

    def _ledgers(self) -> list[KeyedState]:  # type: ignore[type-arg]
        """The namespaces whose records each hold every key of a period, whatever a record of calls touched: a
        service's savings day (every user's spend) and the alert policy (every open rule and incident). With the
        budget ledger they are what ``drain_state`` may hold back."""
        return [self.savings.state, self._policy]

    def drain_state(self, hold_ledgers: bool = False) -> list[tuple[str, bytes | None]]:
        """Changed state, then the cursor: written in this order, a persisted cursor implies its state is.

        ``hold_ledgers`` (after a group of records; the timer writes everything every tick): the ledgers (the
        budget ledger and ``_ledgers``) are not written, nor then the cursor, which stays where they were last
        written (a crash replays from there; their offset stamps keep every charge and decision once, and an alert
        decided again carries its id). Their records hold every key of their period: a budget bucket every user's
        spend, ~0.6 MB at 10,000 users, which a write after every group rewrote whole. Until a cursor has been
        persisted everything is written (without one a new owner would start from Kafka's committed offset)."""
        changed = [(f"{state.namespace}/{key}", blob) for state in self._states() for key, blob in state.drain()]
        ledgers = self._ledgers()
        if hold_ledgers and self.cursor.persisted and (
                self._budget.unwritten() or any(ledger.unwritten() for ledger in ledgers)):
            return changed
        changed += [(f"{state.namespace}/{key}", blob) for state in ledgers for key, blob in state.drain()]
        changed += [(f"{BUDGET_NAMESPACE}/{key}", blob) for key, blob in self._budget.drain()]
        cursor = self.cursor.drain()
        return changed if cursor is None else [*changed, (CURSOR_KEY, cursor)]

    def restore(self, store_key: str, blob: bytes) -> None:
        if store_key == CURSOR_KEY:
            self.cursor = SourceCursor.from_bytes(blob)
            return
        if store_key == RUN_PLAN_KEY:
            self.run_plan = RunPlan.from_bytes(blob)
            return
        namespace, _, key = store_key.partition("/")
        if namespace == BUDGET_NAMESPACE:
            (self._budget.restore_whole if key == BUDGET_KEY else self._budget.restore)(key, blob)
            return
        if namespace == self.experiments.state.namespace:
            self.experiments.restore(key, blob)
            return
        for slots in (self.latency.latency, self.latency.ttft, self.traffic.slots):
            if slots.state.namespace == namespace:
                slots.restore(key, blob)
                return
        if namespace == self.drift.state.namespace:
            self.drift.restore(key, blob)
            return
        for state in (self._attempts, self._policy, *self.quality.states()):
            if state.namespace == namespace:
                state.restore(key, blob)
                return
        if namespace == self.savings.state.namespace:
            self.savings.restore(key, blob)  # the tracker's own restore also tracks the newest day
            return
        raise KeyError(f"unknown state namespace {namespace!r}")


class _PolicyState:
    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy

    def to_bytes(self) -> bytes:
        return self.policy.to_bytes()  # compact JSON of to_dict(), unchanged incidents not encoded again


_QUANTILE_NAMES = tuple(f"p{int(q * 100)}" for q in QUANTILES)


def _quantile_row(count: int, values: list[float]) -> dict[str, Any]:
    row: dict[str, Any] = {"count": count}
    for name, value in zip(_QUANTILE_NAMES, values, strict=True):
        row[name] = None if value != value else value  # NaN: no calls in the window
    return row


def _in_order(by_position: dict[int, list[Observation]]) -> list[Observation]:
    return [obs for i in sorted(by_position) for obs in by_position[i]]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value
