"""Every processor threshold, window, limit and price file in one typed, frozen settings object.

Sources, highest priority first: constructor arguments, ``LLMPULSE_*`` environment variables (nested groups
with ``__``, e.g. ``LLMPULSE_LATENCY__P95_WARNING_S=1.5``), the YAML file named by ``LLMPULSE_CONFIG_FILE``,
then the defaults below, which are the thresholds of the user's seed documents.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from llmpulse.config import DEFAULT_BOOTSTRAP, Topics


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LatencyRules(_Group):
    p95_warning_s: float = 2.0
    p99_critical_s: float = 5.0
    alert_window_s: int = 60
    windows_s: tuple[int, ...] = (60, 300, 3600)
    interval_s: int = 10
    min_samples: int = 20
    min_breaching_calls: int = 3  # a percentile breaches only when this many calls are over its threshold
    breach_alpha: float = 0.001  # ... and more than chance allows (binomial tail) if it sat at the threshold
    relative_accuracy: float = 0.01


class ErrorRules(_Group):
    """Error, timeout and rate-limit share of calls over the traffic window (seed 000)."""

    warning_ratio: float = 0.05
    critical_ratio: float = 0.10


class TrafficRules(_Group):
    """Rates over the traffic window per (service, model, provider).

    Mean tokens per request (prompt + response): seed 004's 500-token average limit sits below every realistic
    service's 1,000-97,000 tokens per request, so crossing ``token_average_limit`` is informational only (INFO,
    priority P3, recorded and never paging). It is WARNING only above ``token_average_warning``, which is off
    (None) until you set a limit that is abnormal for your own traffic, e.g.
    ``LLMPULSE_TRAFFIC__TOKEN_AVERAGE_WARNING=20000``. 0 turns either level off.
    """

    window_s: int = 300
    min_requests: int = 50  # below this a single failure is already 5%: no rate is judged on fewer calls
    cost_per_request_warning_usd: float = 0.015
    no_answer_warning_ratio: float = 0.20
    token_average_limit: int = 500  # INFO (P3) above it
    token_average_warning: int | None = None  # WARNING above it; None or 0: never
    injection_warning_count: int = 5
    hallucination_warning_count: int = 3
    pii_warning_count: int = 1
    unsafe_warning_count: int = 3


class BudgetRules(_Group):
    """Limits in US dollars; None = tracked, never alerted. Thresholds are fractions of each limit."""

    per_request_usd: float | None = 0.50
    global_hour_usd: float | None = 10.0
    global_day_usd: float | None = 50.0
    global_month_usd: float | None = 500.0
    service_hour_usd: float | None = None
    service_day_usd: float | None = None
    service_month_usd: float | None = None
    user_hour_usd: float | None = None
    user_day_usd: float | None = None
    user_month_usd: float | None = None
    model_hour_usd: float | None = None
    model_day_usd: float | None = None
    model_month_usd: float | None = None
    thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 1.0)
    projection_month_usd: float | None = 1000.0
    max_keys_per_scope: int = 100_000


class DriftRules(_Group):
    """Confidence and distribution drift per (service, model); processors/core/drift_monitor.py says how.

    The reference is each feature's first ``reference_size`` values: let it span the traffic's usual cycle, since
    how far its windows stray from one another (KS distance) sets how large a shift must be to alert. A
    distribution alert needs KS p < alpha / (looks_per_block x 3 features), PSI >= psi_warning and a KS distance
    of at least natural_margin x those strays.
    """

    reference_size: int = 4000
    block_size: int = 500
    min_current: int = 100
    confidence_warning_pct: float = 10.0
    confidence_critical_pct: float = 15.0
    psi_warning: float = 0.2
    looks_per_block: int = 5  # judgements per block of values, each over the latest block_size values
    alpha: float = 0.001  # false-alarm budget per block of calls from sampling noise (Bonferroni over looks)
    natural_margin: float = 1.5
    rebaseline_after_incident: bool = True  # a resolved or acknowledged drift incident restarts its reference


class GuardRules(_Group):
    injection_threshold: float = 0.5
    hallucination_min_level: str = "medium"
    max_prompt_chars: int = 16_000
    max_response_chars: int = 32_000
    incident_attempts: int = 3
    incident_window_s: int = 600


class CircuitRules(_Group):
    failure_threshold: int = 5
    error_rate_threshold: float = 0.5
    open_seconds: float = 30.0
    success_threshold: int = 2


class ExperimentRules(_Group):
    control_variants: tuple[str, ...] = ("control", "a", "baseline")
    min_samples: int = 50
    alpha: float = 0.01
    min_effect: float = 0.2


class SavingsRules(_Group):
    """What counts as an "easy" call a cheaper model could have answered (seed 003's model routing)."""

    easy_max_input_tokens: int = 1000
    easy_max_output_tokens: int = 300
    target_models: tuple[str, ...] = ()  # "provider/model" or "model"; empty: the models a service already uses
    retention_days: int = 35
    max_users: int = 1000


class AlertRules(_Group):
    cooldown_s: int = 900
    resolve_hold_s: int = 120


class IncidentRules(_Group):
    """Grouping of member alerts into incidents (processors/core/incidents.py)."""

    group_wait_s: int = 60  # a first page below CRITICAL waits until its severity held this long ...
    max_group_wait_s: int = 180  # ... but no longer than this after the first member; CRITICAL never waits
    group_window_s: int = 300  # a member of the same cause family starting this close to the newest member joins
    cooldown_s: int = 600  # a resolved incident reopens (without paging again) for members starting this soon
    stale_s: int = 3 * 3600  # no member news for this long: the incident resolves


class ValidationLimits(_Group):
    """What a well-formed call looks like; anything outside goes to the dead-letter topic with a reason."""

    max_record_bytes: int = 8 * 1024 * 1024
    max_calls_per_batch: int = 10_000
    max_name_chars: int = 256
    max_text_chars: int = 100_000
    max_labels: int = 32
    max_label_chars: int = 256
    max_latency_ms: float = 3_600_000.0
    max_tokens: int = 10_000_000
    max_future_skew_s: int = 300
    max_age_s: int = 7 * 24 * 3600
    dead_letter_payload_bytes: int = 64 * 1024


class ProcessorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMPULSE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    bootstrap_servers: str = Field(
        default_factory=lambda: os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)
    )
    app_id: str = "llmpulse"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    api_token: SecretStr | None = None
    data_dir: Path = Path(".llmpulse-data")
    topic_partitions: int = 3
    max_series_per_metric: int = 2000

    latency: LatencyRules = LatencyRules()
    errors: ErrorRules = ErrorRules()
    traffic: TrafficRules = TrafficRules()
    budgets: BudgetRules = BudgetRules()
    drift: DriftRules = DriftRules()
    guards: GuardRules = GuardRules()
    circuit: CircuitRules = CircuitRules()
    experiments: ExperimentRules = ExperimentRules()
    savings: SavingsRules = SavingsRules()
    alerts: AlertRules = AlertRules()
    incidents: IncidentRules = IncidentRules()
    validation: ValidationLimits = ValidationLimits()
    schema_registry_url: str | None = None  # read Confluent-framed records too (docs: README, Reports and export)
    schema_registry_auth: SecretStr | None = None  # "user:password" for the registry's basic auth
    prices_file: Path | None = None  # YAML of local/negotiated prices; wins over the genai-prices catalogue

    @property
    def topics(self) -> Topics:
        return Topics()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("LLMPULSE_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"LLMPULSE_CONFIG_FILE={config_file} does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)
