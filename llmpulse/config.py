"""Connection and topic settings shared by the SDK, the processors and every CLI command.

Deliberately free of third-party imports: the SDK (base install) reads it too. This module is the one place
that reads the connection variables: ``KAFKA_BOOTSTRAP_SERVERS``, the Kafka security settings
(``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``: :class:`KafkaSecurity`),
``LLMPULSE_SCHEMA_REGISTRY_URL`` and ``..._AUTH``, and the topic names (``LLMPULSE_TOPICS__<NAME>``, or the
older ``LLMPULSE_TOPIC_<NAME>``). The worker's settings (processors/settings.py) take them from here; everything
else uses the ``LLMPULSE_`` prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
ENV_PREFIX = "LLMPULSE_"


def env(name: str, default: str) -> str:
    """``LLMPULSE_<name>`` from the environment, else ``default``."""
    return os.environ.get(ENV_PREFIX + name, default)


def shared_data_dir() -> Path:
    """The user's reference data (traces, labelled prompts): ``LLMPULSE_SHARED_DATA``, else ``../shared/data``
    beside a source checkout. It may not exist (e.g. in an installed wheel); callers treat it as optional."""
    configured = os.environ.get(ENV_PREFIX + "SHARED_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def bootstrap_servers() -> str:
    """``KAFKA_BOOTSTRAP_SERVERS``, else ``DEFAULT_BOOTSTRAP``."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)


def schema_registry_env() -> dict[str, str]:
    """The optional Confluent Schema Registry as the environment sets it: ``url``
    (``LLMPULSE_SCHEMA_REGISTRY_URL``) and ``auth`` ("user:password", ``LLMPULSE_SCHEMA_REGISTRY_AUTH``).
    A variable that is not set is absent."""
    names = {"url": ENV_PREFIX + "SCHEMA_REGISTRY_URL", "auth": ENV_PREFIX + "SCHEMA_REGISTRY_AUTH"}
    return {key: os.environ[name] for key, name in names.items() if name in os.environ}


@dataclass(frozen=True, slots=True, kw_only=True)
class Topics:
    """Topic names. The worker reads them from its settings (``topics:`` in the YAML file, or the variables
    below); the SDK and the CLI from the environment (``Topics.from_env()``)."""

    # The worker's settings validate this dataclass (pydantic): a misspelt name in the YAML file is an error.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    calls: str = "llm-calls"
    alerts: str = "llm-alerts"
    dead_letter: str = "llm-dead-letter"
    alert_commands: str = "llm-alert-commands"
    provider_state: str = "llm-provider-state"
    budget_state: str = "llm-budget-state"  # compacted: budget states the SDK admission gate follows
    model_routes: str = "llm-model-routes"  # compacted: route-back decisions (quality rollback, opt-in)
    # Internal: one partition; per-record spend and outcome summaries for fleet-wide budgets and circuits.
    fleet: str = "llm-fleet"
    # compacted: writer schemas SDKs announce, so an older worker reads a newer SDK without a registry
    schemas: str = "llm-schemas"
    # OTLP traces as the OpenTelemetry Collector's Kafka exporter writes them (its default topic); the worker
    # reads it only with LLMPULSE_OTLP__ENABLED=true (docs/opentelemetry.md).
    otlp: str = "otlp_spans"

    @classmethod
    def from_env(cls) -> Topics:
        return cls(**topics_env())


def topics_env() -> dict[str, str]:
    """Topic names the environment sets: ``LLMPULSE_TOPICS__<NAME>``, else ``LLMPULSE_TOPIC_<NAME>`` (the older
    spelling, still used by the compose file and the chart); names set by neither are absent."""
    found = {}
    for topic in fields(Topics):
        name = topic.name.upper()
        value = os.environ.get(f"{ENV_PREFIX}TOPICS__{name}", os.environ.get(f"{ENV_PREFIX}TOPIC_{name}"))
        if value is not None:
            found[topic.name] = value
    return found


class KafkaSettingsError(ValueError):
    """A Kafka connection setting is missing or wrong; the message names the variable (or YAML key)."""


class Secret:
    """A password: its value only through ``get_secret_value()``; ``repr``, ``str`` and dumps show stars."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def of(cls, value: object) -> Secret:
        return value if isinstance(value, Secret) else cls(str(value))

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> dict[str, Any]:
        # The worker's settings (pydantic) read a string into a Secret and dump it masked. A core schema is a
        # plain dict, so this module still needs only the standard library.
        return {"type": "function-plain", "function": {"type": "no-info", "function": cls.of},
                "serialization": {"type": "function-plain", "function": str}}


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """How every llmpulse Kafka client (SDK, worker, CLI, forwarder, router) authenticates and encrypts.

    Field names are Kafka's client properties with ``_`` for ``.``; each is read from ``KAFKA_<FIELD>``
    (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_PASSWORD``, ...) and, for the worker, from ``kafka:`` in its YAML
    file. Files are PEM. ``librdkafka_config()`` renders them for confluent-kafka; the worker renders the same
    object for faust (``processors/wiring.py``). Passwords are :class:`Secret` and never printed.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_*
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: str | None = None  # CA bundle that signed the brokers' certificates; default: the system's
    ssl_certificate_location: str | None = None  # client certificate (mutual TLS) ...
    ssl_key_location: str | None = None  # ... and its private key
    ssl_key_password: Secret | None = None  # when that key is encrypted

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        object.__setattr__(self, "security_protocol", protocol)
        for name in ("sasl_password", "ssl_key_password"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Secret.of(value))
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaSettingsError(f"{setting_name('security_protocol')}={self.security_protocol!r} is not one of "
                                     f"{', '.join(SECURITY_PROTOCOLS)}")
        if self.uses_sasl:
            mechanism = (self.sasl_mechanism or "").upper()
            if mechanism not in SASL_MECHANISMS:
                raise KafkaSettingsError(f"{setting_name('sasl_mechanism')} must be one of "
                                         f"{', '.join(SASL_MECHANISMS)} with {protocol} "
                                         f"(it is {self.sasl_mechanism or 'not set'})")
            object.__setattr__(self, "sasl_mechanism", mechanism)
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    raise KafkaSettingsError(f"{setting_name(name)} is required with {protocol}")
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            raise KafkaSettingsError(f"a client certificate needs both {setting_name('ssl_certificate_location')} "
                                     f"and {setting_name('ssl_key_location')}")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """One line for logs: protocol, mechanism and user; never a password."""
        if not self.uses_sasl:
            return self.security_protocol
        return f"{self.security_protocol} {self.sasl_mechanism} as {self.sasl_username}"

    def librdkafka_config(self) -> dict[str, str]:
        """The ``security.protocol``, ``sasl.*`` and ``ssl.*`` properties of a confluent-kafka client."""
        config = {"security.protocol": self.security_protocol}
        if self.uses_sasl:
            assert self.sasl_mechanism and self.sasl_username and self.sasl_password  # checked on creation
            config.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                           "sasl.password": self.sasl_password.get_secret_value()})
        if self.uses_tls:
            optional = {"ssl.ca.location": self.ssl_ca_location, "ssl.certificate.location":
                        self.ssl_certificate_location, "ssl.key.location": self.ssl_key_location,
                        "ssl.key.password": self.ssl_key_password and self.ssl_key_password.get_secret_value()}
            config.update({key: value for key, value in optional.items() if value})
        return config

    @classmethod
    def from_env(cls) -> KafkaSecurity:
        return cls(**kafka_security_env())


def setting_name(field_name: str) -> str:
    """The environment variable of a :class:`KafkaSecurity` field (``sasl_password`` -> ``KAFKA_SASL_PASSWORD``)."""
    return f"KAFKA_{field_name.upper()}"


def kafka_security_env() -> dict[str, str]:
    """The :class:`KafkaSecurity` fields the environment sets (``KAFKA_<FIELD>``); unset or empty ones are absent."""
    found = {}
    for item in fields(KafkaSecurity):
        value = os.environ.get(setting_name(item.name))
        if value:
            found[item.name] = value
    return found
