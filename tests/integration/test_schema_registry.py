"""Confluent Schema Registry wire format against a real registry: SDK -> Kafka -> processor decode.

The registry is Apicurio Registry 3.0.9 (its Confluent-compatible API under ``/apis/ccompat/v7``, in-memory
storage), fetched once with Maven and started once per session by the ``apicurio`` fixture
(llmpulse/local_registry.py). The real confluent-kafka SchemaRegistryClient talks to it, and confluent-kafka's
own AvroSerializer/AvroDeserializer check that our framing is the one every Confluent-compatible client reads
and writes. Each test uses its own topic, so its own subjects. No stand-in registry is needed: even a schema
id that is not Avro is shown with a real JSON Schema registered in Apicurio.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import numpy as np
import pytest

pytest.importorskip("authlib", reason="confluent_kafka.schema_registry needs the registry extra")
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from llmpulse import schemas
from llmpulse.local_registry import LocalRegistry
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.processors.wire.registry import RegistryDecoder
from llmpulse.producers import Pulse
from llmpulse.producers.batching import FIELDS, BatchEncoder
from llmpulse.producers.registry import RegistryEncoder, registry_client, subject_for
from llmpulse.schemas.single_object import MAGIC
from tests.support.kafka import read_topic
from tests.support.tcp_proxy import TcpProxy

NOW = int(time.time() * 1000)
BATCH_SUBJECT = "io.llmpulse.LlmCallBatch"
_JSON_SCHEMA = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"x": {"type": "integer"}}}


class Counting:
    """The real client, counting the two calls llmpulse makes (to show what our own caches save)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.registered: list[str] = []
        self.fetched: list[int] = []

    def register_schema(self, subject_name: str, schema: Any) -> int:
        self.registered.append(subject_name)
        return int(self.client.register_schema(subject_name, schema))

    def get_schema(self, schema_id: int) -> Any:
        self.fetched.append(schema_id)
        return self.client.get_schema(schema_id)


def _topic() -> str:
    return f"sr-{uuid.uuid4().hex[:10]}"


def _rows(n: int, service: str = "chat") -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "timestamp_ms": NOW - 1000, "service": service, "provider": "openai",
             "request_model": "gpt-4o", "status": "ok" if i % 5 else "timeout", "latency_ms": 100.0 + i,
             "input_tokens": 10 + i, "output_tokens": 5 + i, "user_hash": f"u{i % 3}", "labels": {"k": str(i)},
             "reasoning_tokens": i, "tool_calls": i % 2}
            for i in range(n)]


def _decoder(registry: Any = None, version: int | None = None, retry_s: float = 5.0) -> CallDecoder:
    if isinstance(registry, str):
        registry = registry_client(registry)
    decoder = RegistryDecoder(registry, retry_s=retry_s, version=version) if registry is not None else None
    return CallDecoder(Limits(), 1 << 24, 10_000, registry=decoder, version=version)


def test_registry_framed_batch_decodes_like_the_single_object_one(apicurio: LocalRegistry) -> None:
    rows, topic = _rows(50), _topic()
    client = SchemaRegistryClient({"url": apicurio.url})
    framed = RegistryEncoder("t", registry_client(apicurio.url), topic=topic).encode_batch(rows)
    subject = f"{topic}-{BATCH_SUBJECT}"
    registered = client.get_latest_version(subject)
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == registered.schema_id
    assert json.loads(registered.schema.schema_str) == schemas.raw(schemas.LLM_CALL_BATCH)
    assert client.get_subjects().count(subject) == 1

    ours, refused = _decoder(apicurio.url).decode(framed, NOW)
    plain, _ = _decoder().decode(BatchEncoder("t").encode_batch(rows), NOW)
    assert not refused and ours is not None and plain is not None
    for name in ("timestamp_ms", "status", "latency_ms", "input_tokens", "service", "model", "user_hash"):
        assert np.array_equal(getattr(ours, name), getattr(plain, name)), name
    assert ours.labels == plain.labels


def test_subject_registered_once_and_writer_schema_fetched_once_per_id(apicurio: LocalRegistry) -> None:
    topic = _topic()
    sdk_side, worker_side = Counting(registry_client(apicurio.url)), Counting(registry_client(apicurio.url))
    encoder = RegistryEncoder("t", sdk_side, topic=topic)  # type: ignore[arg-type]
    decoder = _decoder(worker_side)
    for _ in range(5):
        calls, refused = decoder.decode(encoder.encode_batch(_rows(3)), NOW)
        assert calls is not None and len(calls) == 3 and not refused
    assert sdk_side.registered == [f"{topic}-{BATCH_SUBJECT}"]
    assert len(worker_side.fetched) == 1


def test_confluent_serializers_and_ours_read_each_other(apicurio: LocalRegistry) -> None:
    topic = _topic()
    client = SchemaRegistryClient({"url": apicurio.url})
    context = SerializationContext(topic, MessageField.VALUE)
    # Confluent's serializer writes one llm_call (subject <topic>-value); our processor reads it.
    call = {name: _rows(1)[0].get(name, default) for name, default, _ in FIELDS}
    serializer = AvroSerializer(client, json.dumps(schemas.raw(schemas.LLM_CALL)))
    columns, refused = _decoder(apicurio.url).decode(serializer(call, context), NOW)
    assert not refused and columns is not None and columns.model.tolist() == ["gpt-4o"]
    # Our SDK writes a batch; Confluent's deserializer reads it back field for field.
    framed = RegistryEncoder("t", client, topic=topic).encode_batch(_rows(4))
    record = AvroDeserializer(client)(framed, context)
    assert record["count"] == 4 and record["service"]["values"] == ["chat"]
    assert np.frombuffer(record["reasoning_tokens"], "<i4").tolist() == [0, 1, 2, 3]


def test_refusals_name_the_reason(apicurio: LocalRegistry) -> None:
    topic = _topic()
    client = SchemaRegistryClient({"url": apicurio.url})
    framed = RegistryEncoder("t", registry_client(apicurio.url), topic=topic).encode_batch(_rows(2))
    unknown = framed[:1] + (987_654).to_bytes(4, "big") + framed[5:]
    _, (refused,) = _decoder(apicurio.url).decode(unknown, NOW)
    assert refused.code == "unknown_schema" and "no schema id 987654" in refused.reason
    _, (refused,) = _decoder().decode(framed, NOW)
    assert refused.code == "unknown_schema" and "LLMPULSE_SCHEMA_REGISTRY_URL" in refused.reason
    _, (refused,) = _decoder("http://127.0.0.1:9").decode(framed, NOW)
    assert refused.code == "registry_unavailable"
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    foreign = AvroSerializer(client, json.dumps(other))({"x": 1}, SerializationContext(topic, MessageField.VALUE))
    _, (refused,) = _decoder(apicurio.url).decode(foreign, NOW)
    assert refused.code == "unknown_schema" and "Other, not an llmpulse call contract" in refused.reason
    # An id of another schema type (a JSON Schema) framed like Avro: refused, not guessed at.
    json_id = client.register_schema(f"{topic}-json", Schema(json.dumps(_JSON_SCHEMA), "JSON"))
    _, (refused,) = _decoder(apicurio.url).decode(framed[:1] + json_id.to_bytes(4, "big") + framed[5:], NOW)
    assert refused.code == "unknown_schema" and "not a readable Avro record" in refused.reason


def test_backward_compatibility_is_enforced_with_a_clear_error(apicurio: LocalRegistry,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    topic = _topic()
    client = SchemaRegistryClient({"url": apicurio.url})
    subject = subject_for(topic, schemas.raw(schemas.LLM_CALL_BATCH))
    v1 = schemas.raw(schemas.LLM_CALL_BATCH, 1)
    client.register_schema(subject, Schema(json.dumps(v1), "AVRO"))
    assert client.set_compatibility(subject, "BACKWARD")["compatibilityLevel"] == "BACKWARD"
    # A change a v2 reader could not read v1 data with (a new field without a default) is refused.
    careless = {**v1, "fields": [*v1["fields"], {"name": "region", "type": "string"}]}
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(careless), "AVRO"))
    assert refused.value.http_status_code == 409 and "region" in refused.value.error_message
    # The v2 we ship adds its fields with defaults: accepted, and fully compatible both ways.
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    v2_id = RegistryEncoder("t", client, topic=topic).schema_id(schemas.LLM_CALL_BATCH)
    assert v2_id is not None and client.get_latest_version(subject).schema_id == v2_id

    # An SDK whose schema the subject's compatibility refuses says so, and keeps sending (single-object).
    other = _topic()
    other_subject = subject_for(other, v1)
    without_producer_id = {**v1, "fields": [f for f in v1["fields"] if f["name"] != "producer_id"]}
    client.register_schema(other_subject, Schema(json.dumps(without_producer_id), "AVRO"))
    client.set_compatibility(other_subject, "BACKWARD")
    with caplog.at_level(logging.ERROR, logger="llmpulse.sdk.registry"):
        payload = RegistryEncoder("t", client, topic=other).encode_batch(_rows(3))
    assert payload[:2] == MAGIC
    (line,) = [r.getMessage() for r in caplog.records if r.name == "llmpulse.sdk.registry"]
    assert f"refused llm_call_batch under subject {other_subject} as incompatible" in line
    assert "producer_id" in line  # the registry's own reason, passed on
    calls, refused_calls = _decoder().decode(payload, NOW)
    assert calls is not None and len(calls) == 3 and not refused_calls


def test_registry_down_falls_back_to_single_object_and_recovers(apicurio: LocalRegistry) -> None:
    proxy = TcpProxy(apicurio.config.port)
    url = f"http://127.0.0.1:{proxy.port}/apis/ccompat/v7"
    encoder = RegistryEncoder("t", registry_client(url), topic=_topic(), retry_s=0.0)
    decoder = _decoder(url, retry_s=0.0)
    payload = encoder.encode_batch(_rows(3))  # the registry is down: readable by every llmpulse worker
    assert payload[:2] == MAGIC
    calls, refused = _decoder().decode(payload, NOW)
    assert calls is not None and len(calls) == 3 and not refused

    proxy.up()
    framed = encoder.encode_batch(_rows(3))
    assert framed[0] == 0
    proxy.down()
    _, (refused_call,) = decoder.decode(framed, NOW)  # bytes kept on the dead-letter topic for replay
    assert refused_call.code == "registry_unavailable" and refused_call.payload == framed
    proxy.up()
    calls, refused = decoder.decode(framed, NOW)
    assert calls is not None and len(calls) == 3 and not refused
    proxy.down()
    calls, refused = decoder.decode(framed, NOW)  # ids are cached: a known id needs no registry
    assert calls is not None and not refused
    assert encoder.encode_batch(_rows(1))[0] == 0


@pytest.mark.parametrize(("sdk", "worker"), [(2, 1), (1, 2), (2, 2)], ids=["new-sdk-old-worker",
                                                                       "old-sdk-new-worker", "both-new"])
def test_upgrades_in_either_order_with_a_registry(apicurio: LocalRegistry, sdk: int, worker: int) -> None:
    client = SchemaRegistryClient({"url": apicurio.url})
    rows = _rows(6)
    framed = RegistryEncoder("t", client, topic=_topic(), version=sdk).encode_batch(rows)
    calls, refused = _decoder(client, version=worker).decode(framed, NOW)
    assert not refused and calls is not None
    assert calls.output_tokens.tolist() == [row["output_tokens"] for row in rows]
    assert calls.event_id.tolist() == [row["event_id"] for row in rows]


def test_pulse_writes_registry_framing_through_kafka(kafka_bootstrap: str, apicurio: LocalRegistry) -> None:
    topic = _topic()
    with Pulse(service="chat", bootstrap_servers=kafka_bootstrap, topic=topic, linger_ms=20,
               schema_registry_url=apicurio.url) as pulse:
        for row in _rows(300):
            pulse.record(**{k: v for k, v in row.items() if k != "service"})
        assert pulse.flush(15) == 0
    values = read_topic(kafka_bootstrap, topic, until=lambda v: len(v) >= 1, timeout=30)
    assert values and all(value[0] == 0 for value in values)
    decoder = _decoder(apicurio.url)
    decoded = [decoder.decode(value, int(time.time() * 1000)) for value in values]
    assert sum(len(calls) for calls, refused in decoded if calls is not None and not refused) == 300
    assert f"{topic}-{BATCH_SUBJECT}" in SchemaRegistryClient({"url": apicurio.url}).get_subjects()
