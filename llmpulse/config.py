"""Connection and topic settings shared by the SDK, the processors and every CLI command.

Deliberately free of third-party imports: the SDK (base install) reads it too. This module is the one place
that reads the connection variables: ``KAFKA_BOOTSTRAP_SERVERS``, ``LLMPULSE_SCHEMA_REGISTRY_URL`` and
``..._AUTH``, and the topic names (``LLMPULSE_TOPICS__<NAME>``, or the older ``LLMPULSE_TOPIC_<NAME>``). The
worker's settings (processors/settings.py) take them from here; everything else uses the ``LLMPULSE_`` prefix.
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
    # Internal: one partition; per-record spend and outcome summaries for fleet-wide budgets and circuits.
    fleet: str = "llm-fleet"

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
