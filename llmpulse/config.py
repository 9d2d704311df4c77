"""Connection and topic settings shared by the SDK, the processors and every CLI command.

Deliberately free of third-party imports: the SDK (base install) reads it too. Kafka is found through
``KAFKA_BOOTSTRAP_SERVERS``; everything else uses the ``LLMPULSE_`` prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; each can be overridden with ``LLMPULSE_TOPIC_<NAME>``."""

    calls: str = field(default_factory=lambda: env("TOPIC_CALLS", "llm-calls"))
    alerts: str = field(default_factory=lambda: env("TOPIC_ALERTS", "llm-alerts"))
    dead_letter: str = field(default_factory=lambda: env("TOPIC_DEAD_LETTER", "llm-dead-letter"))
    alert_commands: str = field(default_factory=lambda: env("TOPIC_ALERT_COMMANDS", "llm-alert-commands"))
    provider_state: str = field(default_factory=lambda: env("TOPIC_PROVIDER_STATE", "llm-provider-state"))
    # Internal: one partition; per-record spend and outcome summaries for fleet-wide budgets and circuits.
    fleet: str = field(default_factory=lambda: env("TOPIC_FLEET", "llm-fleet"))
