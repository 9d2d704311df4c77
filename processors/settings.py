"""Every processor threshold, window, limit, topic and price file in one typed, frozen settings object.

Sources, highest priority first: constructor arguments, ``LLMPULSE_*`` environment variables (nested groups
with ``__``, e.g. ``LLMPULSE_LATENCY__P95_WARNING_S=1.5``), the YAML file named by ``LLMPULSE_CONFIG_FILE``,
then the defaults. The variables shared with the SDK and the CLI are read by ``llmpulse.config``: topic names
(``LLMPULSE_TOPICS__CALLS``, or the older ``LLMPULSE_TOPIC_CALLS``; ``topics: {calls: ...}`` in the YAML file),
Kafka's TLS and SASL settings (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``; ``kafka: {...}`` in
the YAML file, a variable wins over the file field by field), the Schema Registry (``LLMPULSE_SCHEMA_REGISTRY_URL``,
``..._AUTH``) and ``KAFKA_BOOTSTRAP_SERVERS``, which is only the default of ``bootstrap_servers`` (the YAML file
wins over it).

Each setting is declared once. A group the pure core takes as it is (the same names and units) is made from that
core config's fields (``_group_of``): its names, types, defaults and their comments live in processors/core/*
alone. The other groups restate the core's defaults in seconds and dollars, taking each from the core config it
feeds (where the user's seed thresholds are declared in the core's units: milliseconds, micro-dollars).
``processors/configure.py`` builds the core configs back from the groups by keyword.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from llmpulse import config as shared
from llmpulse.circuit_breaker import BreakerConfig
from llmpulse.logs import LogFormat
from llmpulse.processors.core.alert_policy import AlertConfig
from llmpulse.processors.core.drift_monitor import DriftConfig
from llmpulse.processors.core.experiments import ExperimentConfig
from llmpulse.processors.core.guard_monitor import GuardMonitorConfig
from llmpulse.processors.core.health import HealthConfig
from llmpulse.processors.core.incidents import IncidentConfig
from llmpulse.processors.core.kpis import Kpi
from llmpulse.processors.core.latency import LatencyConfig
from llmpulse.processors.core.ledger import USD, BudgetLimits
from llmpulse.processors.core.quality import QualityConfig
from llmpulse.processors.core.savings import SavingsConfig
from llmpulse.processors.core.spend_store import PERIODS, SCOPES
from llmpulse.processors.core.traffic import TrafficConfig
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.otlp import SpanMapping

# The core's defaults, which the hand-written groups below restate in seconds and dollars.
_TRAFFIC, _LIMITS, _GUARDING, _HEALTH = TrafficConfig(), BudgetLimits(), GuardMonitorConfig(), HealthConfig()
_ALERTS, _INCIDENTS, _SPANS = AlertConfig(), IncidentConfig(), SpanMapping()


def _s(ms: int) -> int:
    return ms // 1000


def _usd(micros: int | None) -> float | None:
    return None if micros is None else micros / USD


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _group_of(name: str, config: type, doc: str, *, only: tuple[str, ...] = (), leave_out: tuple[str, ...] = (),
              more: dict[str, Any] | None = None) -> type[_Group]:
    """A settings group that is a core config as it is: its fields' names, types and defaults, read from the config
    (where they are declared and documented), all of them or ``only`` some, less ``leave_out``, plus ``more``
    (name -> (type, default)) the core takes elsewhere."""
    types, defaults = typing.get_type_hints(config), config()
    fields: dict[str, Any] = {f.name: (types[f.name], getattr(defaults, f.name)) for f in dataclasses.fields(config)
                              if (not only or f.name in only) and f.name not in leave_out}
    return pydantic.create_model(name, __base__=_Group, __doc__=doc, __module__=__name__, **fields, **(more or {}))


# The groups the core takes as they are (processors/core/* documents each field).
LatencyRules = _group_of("LatencyRules", LatencyConfig, "Latency percentiles per (service, model, provider) "
                         "(processors/core/latency.py); the slot grid the traffic rates share.")
DriftRules = _group_of("DriftRules", DriftConfig, "Confidence and distribution drift per (service, model) "
                       "(processors/core/drift_monitor.py says how).", leave_out=("psi_bins", "evaluate_every_ms"))
CircuitRules = _group_of("CircuitRules", BreakerConfig, "Provider circuit state from the calls (llmpulse/"
                         "circuit_breaker.py), as the SDK's breaker judges it.",
                         only=("failure_threshold", "error_rate_threshold", "open_seconds", "success_threshold"))
ExperimentRules = _group_of("ExperimentRules", ExperimentConfig, "A/B verdicts per (experiment, variant) against "
                            "the control (processors/core/experiments.py).")
QualityRules = _group_of("QualityRules", QualityConfig, "Feedback joined to calls, answer quality and rollback "
                         "(processors/core/quality.py).")
SavingsRules = _group_of("SavingsRules", SavingsConfig, 'What counts as an "easy" call a cheaper model could have '
                         "answered (seed 003's model routing; processors/core/savings.py).",
                         leave_out=("relative_accuracy",))
# The core's ``weights`` mapping as one documented setting (LLMPULSE_HEALTH__WEIGHT_<COMPONENT>) per component;
# configure.health_config gathers them back into the mapping.
HealthRules = _group_of("HealthRules", HealthConfig, "The AI health score per service (processors/core/health.py): "
                        "a component is 1 within its threshold and 0 at ``zero_at`` times it; the score is the "
                        "weighted mean of the components that have data, x 100.", leave_out=("weights",),
                        more={f"weight_{c}": (float, weight) for c, weight in _HEALTH.weights.items()})
# The core's limits (processors/core/validation.py) and the decoder's and the dead-letter topic's own
# (processors/wire/calls.py, records.py).
ValidationLimits = _group_of("ValidationLimits", Limits, "What a well-formed call looks like; anything outside goes "
                             "to the dead-letter topic with a reason.",
                             more={"max_record_bytes": (int, 8 * 1024 * 1024), "max_calls_per_batch": (int, 10_000),
                                   "dead_letter_payload_bytes": (int, 64 * 1024)})


class ErrorRules(_Group):
    """Error, timeout and rate-limit share of calls over the traffic window (seed 000)."""

    warning_ratio: float = _TRAFFIC.error_warning_ratio
    critical_ratio: float = _TRAFFIC.error_critical_ratio


class TrafficRules(_Group):
    """Rates over the traffic window per (service, model, provider).

    Mean tokens per request (prompt + response): seed 004's 500-token average limit sits below every realistic
    service's 1,000-97,000 tokens per request, so crossing ``token_average_limit`` is informational only (INFO,
    priority P3, recorded and never paging). It is WARNING only above ``token_average_warning``, which is off
    (None) until you set a limit that is abnormal for your own traffic, e.g.
    ``LLMPULSE_TRAFFIC__TOKEN_AVERAGE_WARNING=20000``. 0 turns either level off.
    """

    window_s: int = _TRAFFIC.window_s
    # A breach keeps firing only while this recent part of the window shows it too; a sharp onset that is
    # significant here alone fires at once. Equal to window_s: one window, as before.
    active_window_s: int = _TRAFFIC.active_window_s
    # Below this a single failure is already 5%: no rate is judged on fewer calls.
    min_requests: int = _TRAFFIC.min_requests
    # An error ratio breaches only when failures exceed what chance gives a series failing at the threshold.
    breach_alpha: float = _TRAFFIC.breach_alpha
    cost_per_request_warning_usd: float = _TRAFFIC.cost_per_request_warning_micros / USD
    no_answer_warning_ratio: float = _TRAFFIC.no_answer_warning_ratio
    token_average_limit: int = _TRAFFIC.token_average_limit  # INFO (P3) above it
    token_average_warning: int | None = _TRAFFIC.token_average_warning  # WARNING above it; None or 0: never
    injection_warning_count: int = _TRAFFIC.injection_warning_count
    hallucination_warning_count: int = _TRAFFIC.hallucination_warning_count
    pii_warning_count: int = _TRAFFIC.pii_warning_count
    unsafe_warning_count: int = _TRAFFIC.unsafe_warning_count


# One limit per scope and calendar period, ``<scope>_<period>_usd`` (e.g. LLMPULSE_BUDGETS__USER_DAY_USD): the
# global scope is all calls together; the service, user (hashed id) and model scopes are each key's own calls.
_PERIOD_LIMITS: dict[str, Any] = {f"{scope}_{period}_usd": (float | None, _usd(_LIMITS.limit(scope, period)))
                                  for scope in SCOPES for period in PERIODS}


class _BudgetRules(_Group):
    """Limits in US dollars; None = tracked, never alerted. Thresholds are fractions of each limit."""

    per_request_usd: float | None = _usd(_LIMITS.per_request_micros)
    thresholds: tuple[float, ...] = _LIMITS.thresholds
    # A key that spends this fraction of its hour limit within one minute is a runaway (``budget_burn``, P1: at
    # that pace the hour's budget lasts 1 / burn_fraction minutes); None turns it off.
    burn_fraction: float | None = _LIMITS.burn_fraction
    projection_month_usd: float | None = _usd(_LIMITS.projection_limit_micros)
    max_keys_per_scope: int = _LIMITS.max_keys_per_scope


BudgetRules = pydantic.create_model("BudgetRules", __base__=_BudgetRules, __doc__=_BudgetRules.__doc__,
                                    __module__=__name__, **_PERIOD_LIMITS)


class GuardRules(_Group):
    injection_threshold: float = _GUARDING.guard.injection_threshold
    hallucination_min_level: str = _GUARDING.guard.hallucination_min_level
    max_prompt_chars: int = _GUARDING.guard.max_prompt_chars
    max_response_chars: int = _GUARDING.guard.max_response_chars
    incident_attempts: int = _GUARDING.incident_attempts
    incident_window_s: int = _GUARDING.incident_window_s
    incident_quiet_s: int = _GUARDING.incident_quiet_s  # no attempt for this long: the campaign is over


class AlertRules(_Group):
    cooldown_s: int = _s(_ALERTS.cooldown_ms)
    resolve_hold_s: int = _s(_ALERTS.resolve_hold_ms)


class IncidentRules(_Group):
    """Grouping of member alerts into incidents (processors/core/incidents.py)."""

    # A first page below CRITICAL waits until its severity held this long, but no longer than max_group_wait_s
    # after the first member; CRITICAL never waits.
    group_wait_s: int = _s(_INCIDENTS.group_wait_ms)
    max_group_wait_s: int = _s(_INCIDENTS.max_group_wait_ms)
    # A member of the same cause family starting this close to the newest member joins.
    group_window_s: int = _s(_INCIDENTS.group_window_ms)
    cooldown_s: int = _s(_INCIDENTS.cooldown_ms)  # a resolved incident reopens (without paging) for members this soon
    stale_s: int = _s(_INCIDENTS.stale_ms)  # no member news for this long: the incident resolves


class OtlpIngest(_Group):
    """OpenTelemetry GenAI spans from the Collector's Kafka exporter, read from ``topics.otlp`` beside the calls topic
    (docs/opentelemetry.md). Off until ``LLMPULSE_OTLP__ENABLED=true``; the topic needs the calls topic's partition
    count (the worker creates it so when it is missing)."""

    enabled: bool = False
    encoding: Literal["otlp_proto", "otlp_json"] = "otlp_proto"  # the exporter's ``encoding``
    user_attributes: tuple[str, ...] = _SPANS.user_attributes  # whichever a span carries is its user (hashed)
    experiment_attribute: str = _SPANS.experiment_attribute
    variant_attribute: str = _SPANS.variant_attribute


# Fields whose variables llmpulse.config reads for every component; pydantic's own env reader leaves them alone.
_CONNECTION_FIELDS = frozenset({"topics", "kafka", "schema_registry_url", "schema_registry_auth"})


class _EnvSource(PydanticBaseSettingsSource):
    """``LLMPULSE_*`` variables: pydantic's reader for the groups, llmpulse.config for topics and the registry."""

    def __init__(self, settings_cls: type[BaseSettings], generic: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._generic = generic

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ answers for every field at once

    def __call__(self) -> dict[str, Any]:
        values = {name: value for name, value in self._generic().items() if name not in _CONNECTION_FIELDS}
        values.update({f"schema_registry_{key}": value for key, value in shared.schema_registry_env().items()})
        topics = shared.topics_env()
        if topics:
            values["topics"] = topics
        kafka = shared.kafka_security_env()
        if kafka:
            values["kafka"] = kafka
        return values


class ProcessorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMPULSE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    # KAFKA_BOOTSTRAP_SERVERS is the default: the YAML file and LLMPULSE_BOOTSTRAP_SERVERS win over it.
    bootstrap_servers: str = Field(default_factory=shared.bootstrap_servers)
    kafka: shared.KafkaSecurity = shared.KafkaSecurity()  # TLS and SASL of every Kafka client of the worker
    topics: shared.Topics = shared.Topics()
    app_id: str = "llmpulse"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    api_token: SecretStr | None = None
    data_dir: Path = Path(".llmpulse-data")
    topic_partitions: int = 3
    max_series_per_metric: int = 2000
    # How often an agent writes a calls partition's changed state and cursor (the 5 s timer writes it too): a
    # series touched by many runs meanwhile is encoded and sent once. A crash replays at most this much more of
    # the source (as many runs as were cut since; the result is the same); a rebalance or a clean stop replays
    # nothing (a partition's state is written before it moves). 0: after every group of records.
    state_checkpoint_s: float = Field(default=0.0, ge=0)
    # How often, at most, an agent writes a calls partition's ledgers while records change them: its budget buckets
    # (every user's spend per period: ~0.6 MB at 10,000 users a partition), its services' savings days (every user's
    # spend of the day) and its alert policy (every open rule and incident). Each is one record that grows with its
    # keys, not with the calls a group brings, so written after every group they were most of the state a worker
    # wrote, many times the calls' own bytes at one record a group. Meanwhile the partition's cursor stays where
    # they were last written: a crash replays up to this much more of the source (offset stamps keep every charge
    # once; an alert decided again keeps its id); a rebalance or a clean stop replays nothing. 0: after every group.
    ledger_checkpoint_s: float = Field(default=1.0, ge=0)
    # How often the fleet stage writes its state (one blob: fleet budgets, circuits, alert policy, incidents with
    # every member) while summaries arrive; the timer writes it too when it changed, and so does a worker handing
    # the fleet partition over (a rebalance, a clean stop). A crash replays the fleet topic from the cursor in the
    # last blob: up to this much of it (summaries carry their source offsets, so nothing is counted twice, and an
    # alert or incident decided again has the same id). 0: after every group of summaries.
    fleet_checkpoint_s: float = Field(default=1.0, ge=0)
    # Standby copies of each state partition other workers of the group keep up to date (faust's
    # table_standby_replicas). With faust's in-memory tables a standby shortens no takeover: a partition that becomes
    # a worker's active one is read from the start of its changelog either way (now in bulk: state_recovery.py).
    # A standby applies every state record its partition's owner writes: in a group of two workers at ~100 series,
    # 14-32% more CPU per call for each worker. So none by default.
    standby_replicas: int = Field(default=0, ge=0)
    # json: one JSON object a line with the ids a line carries (alert_id, incident_id; llmpulse/logs.py)
    log_format: LogFormat = "text"

    latency: LatencyRules = LatencyRules()
    errors: ErrorRules = ErrorRules()
    traffic: TrafficRules = TrafficRules()
    budgets: BudgetRules = BudgetRules()
    drift: DriftRules = DriftRules()
    guards: GuardRules = GuardRules()
    circuit: CircuitRules = CircuitRules()
    experiments: ExperimentRules = ExperimentRules()
    savings: SavingsRules = SavingsRules()
    quality: QualityRules = QualityRules()
    alerts: AlertRules = AlertRules()
    incidents: IncidentRules = IncidentRules()
    validation: ValidationLimits = ValidationLimits()
    otlp: OtlpIngest = OtlpIngest()
    health: HealthRules = HealthRules()
    # Business KPIs, spend per named outcome (processors/core/kpis.py), e.g. in YAML
    # ``kpis: [{name: cost_per_follow, outcome: follow}]`` or LLMPULSE_KPIS='[{"name": ..., "outcome": ...}]'.
    kpis: tuple[Kpi, ...] = ()
    schema_registry_url: str | None = None  # read Confluent-framed records too (docs: README, Reports and export)
    schema_registry_auth: SecretStr | None = None  # "user:password" for the registry's basic auth
    prices_file: Path | None = None  # YAML of local/negotiated prices; wins over the genai-prices catalogue

    def as_yaml(self) -> str:
        """Every setting in effect, in the YAML file's layout (``LLMPULSE_CONFIG_FILE``; a group's field is also the
        variable ``LLMPULSE_<GROUP>__<FIELD>``), secrets masked."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls, env_settings)]
        config_file = os.environ.get("LLMPULSE_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"LLMPULSE_CONFIG_FILE={config_file} does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)
