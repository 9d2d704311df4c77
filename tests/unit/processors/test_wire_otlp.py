"""OTLP records -> calls: GenAI spans of both semconv generations become calls, everything else is skipped or refused.

Spans are made by the real OpenTelemetry SDK and encoded by the real OTLP encoders (protobuf and JSON), as the
Collector's Kafka exporter writes them; every test runs on both encodings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_proto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from llmpulse.processors.core.columns import STATUS_CODE, CallColumns
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.otlp import ENCODINGS, OtlpDecoder, SpanCounts, SpanMapping

NOW_MS = 1_800_000_000_000
START_NS = (NOW_MS - 5_000) * 1_000_000

NEW_SEMCONV = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
               "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 120,
               "gen_ai.usage.output_tokens": 30, "gen_ai.usage.cache_read.input_tokens": 100,
               "server.address": "api.openai.com"}
OLD_SEMCONV = {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-5-haiku",
               "gen_ai.usage.prompt_tokens": 40, "gen_ai.usage.completion_tokens": 8}


def _spans(specs: Sequence[dict[str, Any]], service: str | None = "checkout") -> list[ReadableSpan]:
    """One finished span per spec: ``attributes``, ``ms`` (duration), ``status``, ``events`` [(name, offset ms)]."""
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": service} if service else {})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("unit")
    for spec in specs:
        span = tracer.start_span(spec.get("name", "chat"), start_time=START_NS, attributes=spec.get("attributes"))
        for name, offset_ms in spec.get("events", ()):
            span.add_event(name, timestamp=START_NS + int(offset_ms * 1_000_000))
        if "status" in spec:
            span.set_status(spec["status"])
        span.end(end_time=START_NS + int(spec.get("ms", 250.0) * 1_000_000))
    return list(exporter.get_finished_spans())


def _encoded(encoding: str, spans: list[ReadableSpan]) -> bytes:
    if encoding == "otlp_proto":
        return encode_proto(spans).SerializeToString()
    return encode_json(spans).to_json().encode()


Decode = Callable[..., tuple[CallColumns | None, list[Any], SpanCounts]]


@pytest.fixture(params=ENCODINGS)
def decode(request: pytest.FixtureRequest) -> Decode:
    encoding: str = request.param

    def run(specs: Sequence[dict[str, Any]], mapping: SpanMapping | None = None, raw: bytes | None = None,
            **span_options: Any) -> tuple[CallColumns | None, list[Any], SpanCounts]:
        skipped = SpanCounts()

        def count(counts: SpanCounts) -> None:
            skipped.not_genai += counts.not_genai
            skipped.not_model_call += counts.not_model_call

        decoder = OtlpDecoder(Limits(), 1 << 20, encoding, mapping or SpanMapping(), on_skipped=count)
        data = raw if raw is not None else _encoded(encoding, _spans(specs, **span_options))
        calls, refused = decoder.decode(data, NOW_MS)
        return calls, refused, skipped

    run.encoding = encoding  # type: ignore[attr-defined]
    return run


def test_both_semconv_generations_map_onto_the_same_columns(decode: Decode) -> None:
    calls, refused, _ = decode([{"attributes": NEW_SEMCONV, "ms": 812.5}, {"attributes": OLD_SEMCONV, "ms": 95.0}])
    assert refused == [] and calls is not None
    assert list(calls.service) == ["checkout", "checkout"]
    assert list(calls.provider) == ["openai", "anthropic"]
    assert list(calls.model) == ["gpt-4o", "claude-3-5-haiku"]
    assert calls.input_tokens.tolist() == [120, 40] and calls.output_tokens.tolist() == [30, 8]
    assert calls.cached_tokens.tolist() == [100, 0]
    assert calls.latency_ms.tolist() == pytest.approx([812.5, 95.0])
    assert calls.timestamp_ms.tolist() == [NOW_MS - 5_000 + 812, NOW_MS - 5_000 + 95]  # when the call finished
    assert calls.status.tolist() == [STATUS_CODE["ok"]] * 2
    assert np.isnan(calls.ttft_ms).all() and (calls.cost_micros == -1).all()  # priced by the worker


def test_errors_map_to_statuses_by_error_type_and_span_status(decode: Decode) -> None:
    failed = Status(StatusCode.ERROR, "boom")
    calls, _, _ = decode([
        {"attributes": {**NEW_SEMCONV, "error.type": "RateLimitError"}, "status": failed},
        {"attributes": {**NEW_SEMCONV, "error.type": "APITimeoutError"}, "status": failed},
        {"attributes": {**NEW_SEMCONV, "error.type": "500"}, "status": failed},
        {"attributes": NEW_SEMCONV, "status": failed},  # no error.type: semconv's _OTHER
        {"attributes": {**NEW_SEMCONV, "gen_ai.response.finish_reasons": ["content_filter"]}},
    ])
    assert calls is not None
    assert [int(code) for code in calls.status] == [STATUS_CODE[name] for name in (
        "rate_limited", "timeout", "error", "error", "filtered")]
    assert list(calls.error_type) == ["RateLimitError", "APITimeoutError", "500", "_OTHER", None]


def test_non_genai_and_agent_spans_are_skipped_and_counted(decode: Decode) -> None:
    calls, refused, skipped = decode([
        {"name": "GET /cart", "attributes": {"http.request.method": "GET"}},
        {"name": "SELECT", "attributes": {"db.system": "postgresql"}},
        {"name": "invoke_agent", "attributes": {"gen_ai.operation.name": "invoke_agent",
                                                "gen_ai.provider.name": "openai"}},
        {"attributes": NEW_SEMCONV},
    ])
    assert refused == [] and calls is not None and len(calls) == 1
    assert (skipped.not_genai, skipped.not_model_call) == (2, 1)


def test_a_request_without_genai_spans_yields_nothing(decode: Decode) -> None:
    assert decode([{"name": "GET /", "attributes": {"http.request.method": "GET"}}])[:2] == (None, [])


def test_time_to_first_token_from_the_semconv_attribute_or_an_event(decode: Decode) -> None:
    calls, _, _ = decode([
        {"attributes": {**NEW_SEMCONV, "gen_ai.response.time_to_first_chunk": 0.125}, "ms": 900.0},
        {"attributes": NEW_SEMCONV, "events": [("gen_ai.first_token", 340.0)], "ms": 900.0},
        {"attributes": NEW_SEMCONV, "ms": 900.0},
    ])
    assert calls is not None
    assert calls.ttft_ms[:2].tolist() == pytest.approx([125.0, 340.0]) and np.isnan(calls.ttft_ms[2])


def test_service_user_and_experiment_come_from_the_resource_and_configured_attributes(decode: Decode) -> None:
    mapping = SpanMapping(user_attributes=("app.user",), experiment_attribute="exp", variant_attribute="arm")
    attributes = {**NEW_SEMCONV, "app.user": "alice@example.com", "exp": "prompt-v2", "arm": "b"}
    calls, _, _ = decode([{"attributes": attributes}, {"attributes": NEW_SEMCONV}], mapping=mapping)
    assert calls is not None
    user = calls.user_hash[0]
    assert len(user) == 16 and "alice" not in user and calls.user_hash[1] is None  # hashed, never the raw id
    assert list(calls.experiment_id) == ["prompt-v2", None] and list(calls.variant) == ["b", None]
    nameless, _, _ = decode([{"attributes": NEW_SEMCONV}], service=None)
    assert nameless is not None and nameless.service[0].startswith("unknown_service")


def test_a_span_that_maps_to_an_invalid_call_is_refused_alone(decode: Decode) -> None:
    no_model = {k: v for k, v in NEW_SEMCONV.items() if k not in ("gen_ai.request.model", "gen_ai.response.model")}
    calls, refused, _ = decode([{"attributes": NEW_SEMCONV}, {"attributes": no_model},
                                {"attributes": {**NEW_SEMCONV, "gen_ai.usage.input_tokens": "many"}}])
    assert calls is not None and len(calls) == 1
    assert [(r.code, r.reason, r.batch_index) for r in refused] == [
        ("invalid_field", "model must be 1-256 chars", 1),
        ("invalid_field", "input_tokens must be in [0, 10000000]", 2),
    ]
    payload = json.loads(refused[0].payload)
    assert payload["service"] == "checkout" and payload["model"] is None and len(payload["event_id"]) == 48


def test_the_response_model_stands_in_for_a_missing_request_model(decode: Decode) -> None:
    attributes = {k: v for k, v in NEW_SEMCONV.items() if k != "gen_ai.request.model"}
    calls, _, _ = decode([{"attributes": attributes}])
    assert calls is not None and calls.model[0] == "gpt-4o-2024-08-06"


@pytest.mark.parametrize("payload", [b"\x0a\xff\xff\xff\xff\x0f", b'{"resourceSpans": [{"scopeSpans": 7}]}',
                                     b"{not json", b"[1, 2]"])
def test_malformed_payloads_are_refused_whole_with_a_reason(decode: Decode, payload: bytes) -> None:
    calls, refused, _ = decode([], raw=payload)
    assert calls is None and len(refused) == 1 and refused[0].payload == payload
    assert refused[0].code in ("corrupt_otlp", "corrupt_json")
    assert refused[0].reason


def test_an_oversized_record_is_refused_before_parsing() -> None:
    decoder = OtlpDecoder(Limits(), 100, "otlp_json", SpanMapping())
    calls, refused = decoder.decode(b"{" + b" " * 200 + b"}", NOW_MS)
    assert calls is None and refused[0].code == "oversized"


def test_an_unknown_encoding_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="otlp_proto, otlp_json"):
        OtlpDecoder(Limits(), 100, "otlp_avro", SpanMapping())
