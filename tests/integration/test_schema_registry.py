"""Confluent Schema Registry wire format: SDK -> Kafka -> processor decode, against a small in-process registry.

No real registry runs here (no Confluent or Apicurio server could be installed), so ``FakeRegistry`` implements
the two Confluent-compatible endpoints llmpulse uses, under Apicurio's ``/apis/ccompat/v7`` base path:
``POST /subjects/{subject}/versions`` and ``GET /schemas/ids/{id}``. The real confluent-kafka
SchemaRegistryClient talks to it over HTTP, and confluent-kafka's own AvroSerializer/AvroDeserializer check
that our framing is the one every Confluent-compatible client reads and writes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

pytest.importorskip("authlib", reason="confluent_kafka.schema_registry needs the registry extra")
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from llmpulse import schemas
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.processors.wire.registry import RegistryDecoder
from llmpulse.producers import Pulse
from llmpulse.producers.batching import FIELDS, BatchEncoder
from llmpulse.producers.registry import RegistryEncoder, registry_client
from tests.support.kafka import read_topic

BASE = "/apis/ccompat/v7"
NOW = int(time.time() * 1000)


class FakeRegistry(ThreadingHTTPServer):
    """Schemas by id and subjects -> ids, in memory; the same schema text gets the same id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{BASE}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.requests.append(f"POST {path}")
        parts = path[len(BASE):].strip("/").split("/")
        if not path.startswith(BASE) or len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            self._reply(404, {"error_code": 404, "message": "not found"})
            return
        text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
        ids = [i for i, known in self.server.schemas.items() if known == text]
        schema_id = ids[0] if ids else len(self.server.schemas) + 1
        self.server.schemas[schema_id] = text
        self.server.subjects.setdefault(parts[1], []).append(schema_id)
        self._reply(200, {"id": schema_id})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.requests.append(f"GET {path}")
        prefix = f"{BASE}/schemas/ids/"
        schema_id = int(path[len(prefix):]) if path.startswith(prefix) else -1
        if schema_id not in self.server.schemas:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            return
        self._reply(200, {"schema": self.server.schemas[schema_id]})


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _rows(n: int, service: str = "chat") -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "timestamp_ms": NOW - 1000, "service": service, "provider": "openai",
             "request_model": "gpt-4o", "status": "ok" if i % 5 else "timeout", "latency_ms": 100.0 + i,
             "input_tokens": 10 + i, "output_tokens": 5, "user_hash": f"u{i % 3}", "labels": {"k": str(i)}}
            for i in range(n)]


def _decoder(url: str | None) -> CallDecoder:
    return CallDecoder(Limits(), 1 << 24, 10_000, registry=RegistryDecoder(registry_client(url)) if url else None)


def test_registry_framed_batch_decodes_like_the_single_object_one(registry: FakeRegistry) -> None:
    rows = _rows(50)
    framed = RegistryEncoder("t", registry_client(registry.url), topic="calls").encode_batch(rows)
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == 1
    assert registry.subjects == {"calls-io.llmpulse.LlmCallBatch": [1]}

    ours, refused = _decoder(registry.url).decode(framed, NOW)
    plain, _ = _decoder(None).decode(BatchEncoder("t").encode_batch(rows), NOW)
    assert not refused and ours is not None and plain is not None
    for name in ("timestamp_ms", "status", "latency_ms", "input_tokens", "service", "model", "user_hash"):
        assert np.array_equal(getattr(ours, name), getattr(plain, name)), name
    assert ours.labels == plain.labels


def test_writer_schema_is_fetched_once_per_id(registry: FakeRegistry) -> None:
    encoder = RegistryEncoder("t", registry_client(registry.url), topic="calls")
    decoder = _decoder(registry.url)
    for _ in range(5):
        calls, refused = decoder.decode(encoder.encode_batch(_rows(3)), NOW)
        assert calls is not None and len(calls) == 3 and not refused
    assert registry.requests.count(f"GET {BASE}/schemas/ids/1") == 1
    assert registry.requests.count(f"POST {BASE}/subjects/calls-io.llmpulse.LlmCallBatch/versions") == 1


def test_confluent_serializers_and_ours_read_each_other(registry: FakeRegistry) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    context = SerializationContext("calls", MessageField.VALUE)
    # Confluent's serializer writes one llm_call; our processor reads it.
    call = {name: _rows(1)[0].get(name, default) for name, default, _ in FIELDS}
    serializer = AvroSerializer(client, json.dumps(schemas.raw(schemas.LLM_CALL)))
    columns, refused = _decoder(registry.url).decode(serializer(call, context), NOW)
    assert not refused and columns is not None and columns.model.tolist() == ["gpt-4o"]
    # Our SDK writes a batch; Confluent's deserializer reads it back field for field.
    framed = RegistryEncoder("t", client, topic="calls").encode_batch(_rows(4))
    record = AvroDeserializer(client)(framed, context)
    assert record["count"] == 4 and record["service"]["values"] == ["chat"]


def test_refusals_name_the_reason(registry: FakeRegistry) -> None:
    framed = RegistryEncoder("t", registry_client(registry.url), topic="calls").encode_batch(_rows(2))
    unknown = framed[:1] + (99).to_bytes(4, "big") + framed[5:]
    _, (refused,) = _decoder(registry.url).decode(unknown, NOW)
    assert refused.code == "unknown_schema" and "no schema id 99" in refused.reason
    _, (refused,) = _decoder(None).decode(framed, NOW)
    assert refused.code == "unknown_schema" and "LLMPULSE_SCHEMA_REGISTRY_URL" in refused.reason
    _, (refused,) = _decoder("http://127.0.0.1:9").decode(framed, NOW)
    assert refused.code == "registry_unavailable"
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    client = SchemaRegistryClient({"url": registry.url})
    foreign = AvroSerializer(client, json.dumps(other))({"x": 1}, SerializationContext("calls", MessageField.VALUE))
    _, (refused,) = _decoder(registry.url).decode(foreign, NOW)
    assert refused.code == "unknown_schema" and "Other, not an llmpulse call contract" in refused.reason


def test_sdk_falls_back_to_single_object_encoding_while_the_registry_is_down() -> None:
    encoder = RegistryEncoder("t", registry_client("http://127.0.0.1:9"), topic="calls", retry_s=60)
    payload = encoder.encode_batch(_rows(3))
    assert payload[:2] == b"\xc3\x01"  # readable by every llmpulse worker, registry or not
    calls, refused = _decoder(None).decode(payload, NOW)
    assert calls is not None and len(calls) == 3 and not refused


def test_pulse_writes_registry_framing_through_kafka(kafka_bootstrap: str, registry: FakeRegistry) -> None:
    topic = f"sr-{uuid.uuid4().hex[:8]}"
    with Pulse(service="chat", bootstrap_servers=kafka_bootstrap, topic=topic, linger_ms=20,
               schema_registry_url=registry.url) as pulse:
        for row in _rows(300):
            pulse.record(**{k: v for k, v in row.items() if k != "service"})
        assert pulse.flush(15) == 0
    values = read_topic(kafka_bootstrap, topic, until=lambda v: len(v) >= 1, timeout=30)
    assert values and all(value[0] == 0 for value in values)
    decoder = _decoder(registry.url)
    decoded = [decoder.decode(value, int(time.time() * 1000)) for value in values]
    assert sum(len(calls) for calls, refused in decoded if calls is not None and not refused) == 300
    assert set(registry.subjects) == {f"{topic}-io.llmpulse.LlmCallBatch"}
