"""SDK settings: one frozen object, read from ``LLMPULSE_*`` environment variables when not given."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from llmpulse.config import KafkaSecurity, Topics, bootstrap_servers, env, schema_registry_env
from llmpulse.connection import client_config
from llmpulse.producers.admission import AdmissionSettings


def _env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


def _env_bool(name: str, default: bool) -> bool:
    return env(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def detect_service() -> str:
    """``LLMPULSE_SERVICE``, else the top-level package of the first caller outside llmpulse, else argv[0]."""
    configured = os.environ.get("LLMPULSE_SERVICE")
    if configured:
        return configured
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module and not module.startswith(("llmpulse", "importlib", "runpy", "contextlib")):
            if module != "__main__":
                return module.split(".")[0]
            break
        frame = frame.f_back
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.splitext(script)[0] or "unknown-service"


@dataclass(frozen=True, slots=True)
class PulseSettings:
    """How the SDK batches, buffers and protects text. Every field has an ``LLMPULSE_`` variable."""

    bootstrap_servers: str = field(default_factory=bootstrap_servers)
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity.from_env)  # KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, ...
    topic: str = field(default_factory=lambda: Topics.from_env().calls)
    service: str = ""  # empty: detected (see detect_service)
    batch_max_calls: int = field(default_factory=lambda: _env_int("SDK_BATCH_MAX_CALLS", 500))
    linger_ms: int = field(default_factory=lambda: _env_int("SDK_LINGER_MS", 100))
    # Fewer calls than batch_min_calls wait for more, up to max_linger_ms after the oldest of them: a busy service
    # still sends every linger_ms, a quiet one a record of a few calls a second instead of one of a call or two
    # every linger_ms. A worker's cost at many quiet services follows its records more than its calls
    # (docs/operations.md, "Sizing for many series"). batch_min_calls 1: every linger_ms, whatever is pending.
    batch_min_calls: int = field(default_factory=lambda: _env_int("SDK_BATCH_MIN_CALLS", 50))
    max_linger_ms: int = field(default_factory=lambda: _env_int("SDK_MAX_LINGER_MS", 1000))
    max_buffered_calls: int = field(default_factory=lambda: _env_int("SDK_MAX_BUFFERED_CALLS", 100_000))
    capture_text: bool = field(default_factory=lambda: _env_bool("SDK_CAPTURE_TEXT", False))
    redact_pii: bool = field(default_factory=lambda: _env_bool("SDK_REDACT_PII", True))
    max_text_chars: int = field(default_factory=lambda: _env_int("SDK_MAX_TEXT_CHARS", 16_384))
    compression: str = field(default_factory=lambda: env("SDK_COMPRESSION", "lz4"))
    shutdown_timeout_s: float = 5.0
    # Optional Confluent Schema Registry: when set, records use its wire format (producers/registry.py).
    schema_registry_url: str = field(default_factory=lambda: schema_registry_env().get("url", ""))
    schema_registry_auth: str = field(default_factory=lambda: schema_registry_env().get("auth", ""), repr=False)
    extra_producer_config: dict[str, str] = field(default_factory=dict)
    # Before the call (producers/admission.py, prompt_guard.py): the admission gate and the input guard.
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    guard: str = field(default_factory=lambda: env("SDK_GUARD", "off").strip().lower())  # off, observe, block
    budget_state_topic: str = field(default_factory=lambda: Topics.from_env().budget_state)
    # Writer schemas announced before the first record (schemas/writer_schemas.py); "" announces nothing.
    schemas_topic: str = field(default_factory=lambda: Topics.from_env().schemas)
    schema_announce_timeout_s: float = 2.0  # how long the background sender waits for them, once

    def producer_config(self) -> dict[str, object]:
        # librdkafka logs each failed reconnect: client_config routes it to a logger the host application controls.
        config: dict[str, object] = {
            **client_config(self.bootstrap_servers, self.kafka, "llmpulse.sdk.librdkafka"),
            "enable.idempotence": True,
            "compression.type": self.compression,
            "linger.ms": 5,  # the SDK already lingers; librdkafka only needs to coalesce our records
            # Never expire undelivered batches: the SDK's own bound decides what is dropped, so an outage
            # of any length loses nothing within that bound.
            "message.timeout.ms": 0,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "client.id": "llmpulse-sdk",
        }
        config.update(self.extra_producer_config)
        return config

