"""Optional Confluent Schema Registry wire format for the SDK.

Wire format (what every Confluent-compatible serializer writes): byte ``0x00``, the 4-byte big-endian id the
registry gave the writer schema, then the Avro binary body. It is used only when a registry URL is configured
(``LLMPULSE_SCHEMA_REGISTRY_URL``); single-object encoding (schemas/single_object.py) stays the default and needs no
service. The llmpulse worker reads both.

Subjects follow the TopicRecordNameStrategy, ``<topic>-io.llmpulse.LlmCallBatch``: the calls topic carries
two record types (batches and single calls), which one subject per topic could not hold.

A registry that cannot be reached must not cost calls: until the schema id is known (retried every
``retry_s``), batches go out single-object encoded, which the worker reads just the same.

Needs ``confluent_kafka.schema_registry``'s dependencies (attrs, cachetools, httpx, authlib); a missing one is
reported with the extra that installs them.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any, Protocol

import fastavro

from llmpulse import schemas
from llmpulse.producers.batching import FIELDS, BatchEncoder

log = logging.getLogger("llmpulse.sdk.registry")

WIRE_MAGIC = 0
WIRE_HEADER = struct.Struct(">bI")  # magic byte, schema id
EXTRA_HINT = "pip install 'llmpulse[registry]'"


class SchemaRegistry(Protocol):
    """The two calls llmpulse makes (confluent_kafka.schema_registry.SchemaRegistryClient has both)."""

    def register_schema(self, subject_name: str, schema: Any) -> int: ...

    def get_schema(self, schema_id: int) -> Any: ...


def registry_client(url: str, basic_auth: str | None = None) -> SchemaRegistry:
    """A confluent-kafka registry client; ``basic_auth`` is ``user:password``."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:
        raise ImportError(
            f"a schema registry URL is configured but its client cannot load ({exc}); install it with {EXTRA_HINT}"
        ) from exc
    conf: dict[str, Any] = {"url": url}
    if basic_auth:
        conf["basic.auth.user.info"] = basic_auth
    return SchemaRegistryClient(conf)  # type: ignore[return-value]


def full_name(raw_schema: dict[str, Any]) -> str:
    namespace = raw_schema.get("namespace")
    return f"{namespace}.{raw_schema['name']}" if namespace else str(raw_schema["name"])


def subject_for(topic: str, raw_schema: dict[str, Any]) -> str:
    return f"{topic}-{full_name(raw_schema)}"


def frame(schema_id: int, parsed_schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(WIRE_HEADER.pack(WIRE_MAGIC, schema_id))
    fastavro.schemaless_writer(buffer, parsed_schema, record)
    return buffer.getvalue()


class RegistryEncoder:
    """BatchEncoder's interface, writing the registry wire format once the schema id is known."""

    def __init__(self, producer_id: str, registry: SchemaRegistry, topic: str, retry_s: float = 30.0,
                 version: int | None = None) -> None:
        self.plain = BatchEncoder(producer_id, version)
        self.version = version  # the contract version written (newest when None), as in BatchEncoder
        self.registry = registry
        self.topic = topic
        self.retry_s = retry_s
        self._ids: dict[str, int] = {}
        self._failed_at: dict[str, float] = {}

    def columns(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self.plain.columns(rows)

    def encode_batch(self, rows: Sequence[dict[str, Any]]) -> bytes:
        record = self.plain.columns(rows)
        codec = self.plain.batch_codec
        schema_id = self.schema_id(schemas.LLM_CALL_BATCH)
        return codec.encode(record) if schema_id is None else frame(schema_id, codec.schema, record)

    def encode_call(self, row: dict[str, Any]) -> bytes:
        schema_id = self.schema_id(schemas.LLM_CALL)
        if schema_id is None:
            return self.plain.encode_call(row)
        record = {name: row.get(name, default) for name, default, _ in FIELDS}
        return frame(schema_id, self.plain.call_codec.schema, record)

    def schema_id(self, name: str) -> int | None:
        """The registry id of our schema ``name``, registering it on first use; None while unreachable."""
        known = self._ids.get(name)
        if known is not None:
            return known
        failed = self._failed_at.get(name)
        if failed is not None and time.monotonic() - failed < self.retry_s:
            return None
        raw = schemas.raw(name, self.version)
        subject = subject_for(self.topic, raw)
        try:
            from confluent_kafka.schema_registry import Schema

            schema_id = int(self.registry.register_schema(subject, Schema(json.dumps(raw), "AVRO")))
        except Exception as exc:  # unreachable, refused, incompatible: fall back, never drop the calls
            self._failed_at[name] = time.monotonic()
            if getattr(exc, "http_status_code", None) == 409:
                log.error("llmpulse: the schema registry refused %s under subject %s as incompatible with the "
                          "versions registered there (the subject's compatibility mode, e.g. BACKWARD): %s; "
                          "sending single-object encoded, retrying in %.0f s. See docs/schemas.md, Upgrades",
                          name, subject, getattr(exc, "error_message", exc), self.retry_s)
            else:
                log.warning("llmpulse: cannot register %s under %s (%s); sending single-object encoded for %.0f s",
                            name, subject, exc, self.retry_s)
            return None
        self._ids[name] = schema_id
        self._failed_at.pop(name, None)
        return schema_id


def encoder_for(producer_id: str, topic: str, registry_url: str = "", basic_auth: str | None = None,
                ) -> BatchEncoder | RegistryEncoder:
    """The SDK's encoder: single-object encoding, or the registry wire format when a URL is configured."""
    if not registry_url:
        return BatchEncoder(producer_id)
    return RegistryEncoder(producer_id, registry_client(registry_url, basic_auth), topic)
