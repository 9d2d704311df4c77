"""OpenTelemetry GenAI spans and JSON calls -> real Kafka -> real worker: its totals match the calls made.

The spans come from the real parts: the official OpenTelemetry instrumentation of the openai client
(opentelemetry-instrumentation-openai-v2) on the OpenTelemetry SDK, the real openai client calling the local fake
API server, and the real OTLP encoders. Each Kafka record is one ExportTraceServiceRequest, protobuf bytes for
``otlp_proto`` and OTLP/JSON for ``otlp_json``, with no key: what the Collector's Kafka exporter writes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from openai import OpenAI, RateLimitError
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_proto
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmpulse.producers.simulation.fake_llm_api import FakeLLMApi
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(180)


def _instrumented_calls(service: str) -> tuple[list[ReadableSpan], dict[str, int]]:
    """Six real openai calls (chat, a stream, a 429, embeddings) inside one plain HTTP-handler span; the spans the
    instrumentation recorded and what the client itself was told (calls, tokens)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    made = {"calls": 0, "input": 0, "output": 0, "rate_limited": 0}
    try:
        with FakeLLMApi() as api, provider.get_tracer("shop").start_as_current_span("POST /checkout"):
            client = OpenAI(base_url=api.openai_base_url, api_key="test", max_retries=0)
            for words in ("hello there", "what is my order status", "thanks"):
                reply = client.chat.completions.create(model="gpt-4o-mini",
                                                       messages=[{"role": "user", "content": words}])
                assert reply.usage is not None
                made["input"] += reply.usage.prompt_tokens
                made["output"] += reply.usage.completion_tokens
            stream = client.chat.completions.create(model="gpt-4o", stream=True, stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "stream me four words"}])
            for chunk in stream:
                if chunk.usage is not None:
                    made["input"] += chunk.usage.prompt_tokens
                    made["output"] += chunk.usage.completion_tokens
            with pytest.raises(RateLimitError):
                client.chat.completions.create(model="gpt-4o-status-429", messages=[{"role": "user", "content": "x"}])
            made["rate_limited"] += 1
            embedded = client.embeddings.create(model="text-embedding-3-small", input=["a b c"])
            made["input"] += embedded.usage.prompt_tokens
            made["calls"] = 6
    finally:
        instrumentor.uninstrument()
    return list(exporter.get_finished_spans()), made


ENCODERS: dict[str, Callable[[list[ReadableSpan]], bytes]] = {
    "otlp_proto": lambda spans: encode_proto(spans).SerializeToString(),
    "otlp_json": lambda spans: encode_json(spans).to_json().encode(),
}


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_genai_spans_through_the_otlp_topic_count_every_call(
        encoding: str, worker_factory: Callable[..., WorkerProcess]) -> None:
    otlp_topic = f"otlp-{uuid.uuid4().hex[:8]}"
    worker = worker_factory(LLMPULSE_OTLP__ENABLED="true", LLMPULSE_OTLP__ENCODING=encoding,
                            LLMPULSE_TOPIC_OTLP=otlp_topic)
    service = f"shop-{encoding}"
    spans, made = _instrumented_calls(service)
    assert len(spans) == 7  # six model calls and the HTTP handler around them

    encode = ENCODERS[encoding]
    producer = Producer({"bootstrap.servers": worker.bootstrap})
    producer.produce(otlp_topic, encode(spans[:3]))  # one ExportTraceServiceRequest per record, no key
    producer.produce(otlp_topic, encode(spans[3:]))
    producer.produce(otlp_topic, b"\x0a\x05garbage" if encoding == "otlp_proto" else b'{"resourceSpans": 3}')
    assert producer.flush(10) == 0

    def metric(name: str, **labels: str) -> float:
        return worker.metric(name, service=service, **labels)

    assert wait_until(lambda: metric("llmpulse_llm_requests_total") == made["calls"], 60, step=0.3), worker.log_tail()
    assert metric("llmpulse_llm_requests_total", status="rate_limited") == made["rate_limited"]
    assert metric("llmpulse_llm_tokens_total", type="input") == made["input"]
    assert metric("llmpulse_llm_tokens_total", type="output") == made["output"]
    assert worker.metric("llmpulse_otlp_spans_skipped_total", reason="not_genai") == 1
    assert wait_until(lambda: worker.metric("llmpulse_dead_letter_total") == 1, 20, step=0.3)
    _, api = worker.get("/api/metrics")
    rows = [row for row in api["series"] if row["service"] == service]
    assert {row["model"] for row in rows} == {"gpt-4o-mini", "gpt-4o", "gpt-4o-status-429", "text-embedding-3-small"}
    assert {row["provider"] for row in rows} == {"openai"}


def test_json_calls_on_the_calls_topic_count_like_avro(worker: WorkerProcess) -> None:
    now = int(time.time() * 1000)

    def call(i: int, **fields: Any) -> dict[str, Any]:
        return {"event_id": f"json-{i}", "timestamp_ms": now, "service": "script", "provider": "openai",
                "request_model": "gpt-4o-mini", "status": "ok", "latency_ms": 250.0, "input_tokens": 100,
                "output_tokens": 20, **fields}

    producer = Producer({"bootstrap.servers": worker.bootstrap})
    topic = worker.topic("calls")
    producer.produce(topic, json.dumps(call(0)).encode())  # one object
    producer.produce(topic, json.dumps([call(1), call(2, status="error", error_type="500"),
                                        call(3, latency_ms="slow"), call(4, input_tokens=-5)]).encode())
    producer.produce(topic, b"[{broken")
    assert producer.flush(10) == 0

    assert wait_until(lambda: worker.metric("llmpulse_llm_requests_total", service="script") == 3, 60, step=0.3)
    assert worker.metric("llmpulse_llm_requests_total", service="script", status="error") == 1
    assert worker.metric("llmpulse_llm_tokens_total", service="script", type="input") == 300
    assert wait_until(lambda: worker.metric("llmpulse_dead_letter_total") == 3, 20, step=0.3)
    assert worker.metric("llmpulse_dead_letter_total", reason="invalid_field") == 2
    assert worker.metric("llmpulse_dead_letter_total", reason="corrupt_json") == 1
