"""Settings (processors/settings.py, in dollars and seconds) -> the pure core's configs (micro-dollars, ms)."""

from __future__ import annotations

from llmpulse.circuit_breaker import BreakerConfig
from llmpulse.processors.core.alert_policy import AlertConfig
from llmpulse.processors.core.drift_monitor import DriftConfig
from llmpulse.processors.core.engine import EngineConfig
from llmpulse.processors.core.experiments import ExperimentConfig
from llmpulse.processors.core.fleet import FleetConfig
from llmpulse.processors.core.guarding import GuardingConfig
from llmpulse.processors.core.guards.guard import GuardConfig
from llmpulse.processors.core.incidents import IncidentConfig
from llmpulse.processors.core.latency import LatencyConfig
from llmpulse.processors.core.ledger import BudgetLimits, PeriodLimits
from llmpulse.processors.core.savings import SavingsConfig
from llmpulse.processors.core.traffic import TrafficConfig
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.settings import ProcessorSettings

USD = 1_000_000


def _micros(usd: float | None) -> int | None:
    return None if usd is None else round(usd * USD)


def budget_limits(s: ProcessorSettings) -> BudgetLimits:
    b = s.budgets

    def period(scope: str) -> PeriodLimits:
        return PeriodLimits(*(_micros(getattr(b, f"{scope}_{p}_usd")) for p in ("hour", "day", "month")))

    return BudgetLimits(
        per_request_micros=_micros(b.per_request_usd),
        global_limits=period("global"),
        service_limits=period("service"),
        user_limits=period("user"),
        model_limits=period("model"),
        thresholds=b.thresholds,
        projection_limit_micros=_micros(b.projection_month_usd),
        max_keys_per_scope=b.max_keys_per_scope,
    )


def alert_config(s: ProcessorSettings) -> AlertConfig:
    return AlertConfig(cooldown_ms=s.alerts.cooldown_s * 1000, resolve_hold_ms=s.alerts.resolve_hold_s * 1000)


def guarding_config(s: ProcessorSettings) -> GuardingConfig:
    g = s.guards
    return GuardingConfig(
        guard=GuardConfig(injection_threshold=g.injection_threshold, hallucination_min_level=g.hallucination_min_level,
                          max_prompt_chars=g.max_prompt_chars, max_response_chars=g.max_response_chars),
        incident_attempts=g.incident_attempts,
        incident_window_s=g.incident_window_s,
    )


def engine_config(s: ProcessorSettings) -> EngineConfig:
    lat, t, d, e = s.latency, s.traffic, s.drift, s.experiments
    return EngineConfig(
        latency=LatencyConfig(p95_warning_s=lat.p95_warning_s, p99_critical_s=lat.p99_critical_s,
                              alert_window_s=lat.alert_window_s, windows_s=lat.windows_s, interval_s=lat.interval_s,
                              min_samples=lat.min_samples, min_breaching_calls=lat.min_breaching_calls,
                              breach_alpha=lat.breach_alpha,
                              relative_accuracy=lat.relative_accuracy),
        traffic=TrafficConfig(
            window_s=t.window_s, interval_s=lat.interval_s, horizon_s=max(lat.windows_s), min_requests=t.min_requests,
            error_warning_ratio=s.errors.warning_ratio, error_critical_ratio=s.errors.critical_ratio,
            cost_per_request_warning_micros=round(t.cost_per_request_warning_usd * USD),
            no_answer_warning_ratio=t.no_answer_warning_ratio, token_average_limit=t.token_average_limit,
            token_average_warning=t.token_average_warning,
            injection_warning_count=t.injection_warning_count,
            hallucination_warning_count=t.hallucination_warning_count,
            pii_warning_count=t.pii_warning_count, unsafe_warning_count=t.unsafe_warning_count,
        ),
        drift=DriftConfig(**d.model_dump()),
        guarding=guarding_config(s),
        experiments=ExperimentConfig(e.control_variants, e.min_samples, e.alpha, e.min_effect),
        limits=budget_limits(s),
        alerts=alert_config(s),
        savings=SavingsConfig(
            easy_max_input_tokens=s.savings.easy_max_input_tokens,
            easy_max_output_tokens=s.savings.easy_max_output_tokens,
            target_models=s.savings.target_models,
            retention_days=s.savings.retention_days,
            max_users=s.savings.max_users,
        ),
    )


def fleet_config(s: ProcessorSettings) -> FleetConfig:
    c = s.circuit
    return FleetConfig(
        limits=budget_limits(s),
        breaker=BreakerConfig(failure_threshold=c.failure_threshold, error_rate_threshold=c.error_rate_threshold,
                              open_seconds=c.open_seconds, success_threshold=c.success_threshold),
        alerts=alert_config(s),
        incidents=IncidentConfig(group_wait_ms=s.incidents.group_wait_s * 1000,
                                 max_group_wait_ms=s.incidents.max_group_wait_s * 1000,
                                 group_window_ms=s.incidents.group_window_s * 1000,
                                 cooldown_ms=s.incidents.cooldown_s * 1000, stale_ms=s.incidents.stale_s * 1000),
    )


def validation_limits(s: ProcessorSettings) -> Limits:
    v = s.validation
    return Limits(
        max_name_chars=v.max_name_chars, max_text_chars=v.max_text_chars, max_labels=v.max_labels,
        max_label_chars=v.max_label_chars, max_latency_ms=v.max_latency_ms, max_tokens=v.max_tokens,
        max_future_skew_s=v.max_future_skew_s, max_age_s=v.max_age_s,
    )
