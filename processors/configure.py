"""Settings (processors/settings.py, in dollars and seconds) -> the pure core's configs (micro-dollars, ms).

Every config is built by keyword from the settings group of the same fields (``**group.model_dump()``), with the
unit conversions spelt out; a settings field no config takes is a TypeError here, not a silently dropped value.
The core configs hold the defaults; tests/unit/processors/test_configure.py checks every setting arrives.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmpulse.circuit_breaker import BreakerConfig
from llmpulse.processors.core.alert_policy import AlertConfig
from llmpulse.processors.core.drift_monitor import DriftConfig
from llmpulse.processors.core.engine import EngineConfig
from llmpulse.processors.core.experiments import ExperimentConfig
from llmpulse.processors.core.fleet import FleetConfig
from llmpulse.processors.core.guard_monitor import GuardMonitorConfig
from llmpulse.processors.core.guards.guard import GuardConfig
from llmpulse.processors.core.health import COMPONENTS, HealthConfig
from llmpulse.processors.core.incidents import IncidentConfig
from llmpulse.processors.core.latency import LatencyConfig
from llmpulse.processors.core.ledger import USD, BudgetLimits, PeriodLimits
from llmpulse.processors.core.quality import QualityConfig
from llmpulse.processors.core.savings import SavingsConfig
from llmpulse.processors.core.spend_store import PERIODS
from llmpulse.processors.core.traffic import TrafficConfig
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.wire.otlp import SpanMapping

GUARD_FIELDS = frozenset({"injection_threshold", "hallucination_min_level", "max_prompt_chars", "max_response_chars"})
# ValidationLimits the decoder and the dead-letter records take directly (processors/app.py), not the core.
DECODER_FIELDS = frozenset({"max_record_bytes", "max_calls_per_batch", "dead_letter_payload_bytes"})


def _micros(usd: float | None) -> int | None:
    return None if usd is None else round(usd * USD)


def _ms(group: BaseModel) -> dict[str, Any]:
    """A group of ``<name>_s`` durations as the core's ``<name>_ms`` keywords."""
    return {name.removesuffix("_s") + "_ms": seconds * 1000 for name, seconds in group.model_dump().items()}


def budget_limits(s: ProcessorSettings) -> BudgetLimits:
    b = s.budgets

    def period(scope: str) -> PeriodLimits:
        return PeriodLimits(**{p: _micros(getattr(b, f"{scope}_{p}_usd")) for p in PERIODS})

    return BudgetLimits(
        per_request_micros=_micros(b.per_request_usd),
        global_limits=period("global"),
        service_limits=period("service"),
        user_limits=period("user"),
        model_limits=period("model"),
        thresholds=b.thresholds,
        burn_fraction=b.burn_fraction,
        projection_limit_micros=_micros(b.projection_month_usd),
        max_keys_per_scope=b.max_keys_per_scope,
    )


def alert_config(s: ProcessorSettings) -> AlertConfig:
    return AlertConfig(**_ms(s.alerts))


def incident_config(s: ProcessorSettings) -> IncidentConfig:
    return IncidentConfig(**_ms(s.incidents))


def guarding_config(s: ProcessorSettings) -> GuardMonitorConfig:
    g = s.guards
    return GuardMonitorConfig(guard=GuardConfig(**g.model_dump(include=GUARD_FIELDS)),
                          **g.model_dump(exclude=GUARD_FIELDS))


def latency_config(s: ProcessorSettings) -> LatencyConfig:
    return LatencyConfig(**s.latency.model_dump())


def traffic_config(s: ProcessorSettings) -> TrafficConfig:
    t = s.traffic
    return TrafficConfig(
        **t.model_dump(exclude={"cost_per_request_warning_usd"}),
        cost_per_request_warning_micros=_micros(t.cost_per_request_warning_usd),
        error_warning_ratio=s.errors.warning_ratio,
        error_critical_ratio=s.errors.critical_ratio,
        interval_s=s.latency.interval_s,  # the latency monitor's slot grid
        horizon_s=max(s.latency.windows_s),
        exact_s=s.latency.exact_s,
        fold_s=s.latency.fold_s,
    )


def engine_config(s: ProcessorSettings) -> EngineConfig:
    return EngineConfig(
        latency=latency_config(s),
        traffic=traffic_config(s),
        drift=DriftConfig(**s.drift.model_dump()),
        guarding=guarding_config(s),
        experiments=ExperimentConfig(**s.experiments.model_dump()),
        limits=budget_limits(s),
        alerts=alert_config(s),
        savings=SavingsConfig(**s.savings.model_dump()),
        quality=QualityConfig(**s.quality.model_dump()),
    )


def fleet_config(s: ProcessorSettings) -> FleetConfig:
    return FleetConfig(
        limits=budget_limits(s),
        breaker=BreakerConfig(**s.circuit.model_dump()),
        alerts=alert_config(s),
        incidents=incident_config(s),
    )


def health_config(s: ProcessorSettings) -> HealthConfig:
    """The documented ``weight_<component>`` settings gathered into the core's one ``weights`` mapping."""
    rules = s.health.model_dump()
    weights = {name: rules.pop(f"weight_{name}") for name in COMPONENTS}
    return HealthConfig(**rules, weights=weights)


def validation_limits(s: ProcessorSettings) -> Limits:
    return Limits(**s.validation.model_dump(exclude=DECODER_FIELDS))


def span_mapping(s: ProcessorSettings) -> SpanMapping:
    return SpanMapping(**s.otlp.model_dump(exclude={"enabled", "encoding"}))
