"""JSON records on the calls topic: the same calls, limits and dead-letter reasons as Avro records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmpulse.processors.core.columns import STATUS_CODE
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder

NOW_MS = 1_700_000_000_000


def _call(i: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"ev-{i}", "timestamp_ms": NOW_MS - 1000, "service": "billing", "provider": "openai",
            "request_model": "gpt-4o-mini", "status": "ok", "latency_ms": 120 + i, **fields}


@pytest.fixture(scope="module")
def decoder() -> CallDecoder:
    return CallDecoder(Limits(), max_record_bytes=1 << 20, max_calls_per_batch=100)


def test_one_object_and_an_array_decode_like_the_avro_records(decoder: CallDecoder) -> None:
    rows = [_call(0, input_tokens=10, output_tokens=4, labels={"team": "a"}),
            _call(1, status="timeout", ttft_ms=30.5, user_hash="u1")]
    from_json, refused = decoder.decode(json.dumps(rows).encode(), NOW_MS)
    from_avro, _ = decoder.decode(BatchEncoder("test").encode_batch(rows), NOW_MS)
    assert refused == [] and from_json is not None and from_avro is not None
    for name in ("service", "provider", "model", "status", "latency_ms", "input_tokens", "user_hash", "labels"):
        assert list(getattr(from_json, name)) == list(getattr(from_avro, name)), name
    single, refused = decoder.decode(b"  " + json.dumps(_call(7)).encode() + b"\n", NOW_MS)
    assert refused == [] and single is not None and single.status.tolist() == [STATUS_CODE["ok"]]


def test_a_call_that_misfits_the_schema_is_refused_alone_with_its_own_json(decoder: CallDecoder) -> None:
    rows: list[Any] = [_call(0), _call(1, latency_ms="fast"), {"service": "x"}, _call(3, colour="red"), 42,
                       _call(5, latency_ms=-1.0)]
    calls, refused = decoder.decode(json.dumps(rows).encode(), NOW_MS)
    assert calls is not None and list(calls.event_id) == ["ev-0"]
    assert [(r.code, r.batch_index) for r in refused] == [("invalid_field", i) for i in (1, 2, 3, 4, 5)]
    reasons = [r.reason for r in refused]
    assert "latency_ms" in reasons[0] and "missing required field(s) event_id" in reasons[1]
    assert "unknown field(s) colour" in reasons[2] and "JSON object" in reasons[3]
    assert reasons[4] == "latency_ms must be a finite number >= 0"  # the same reason an Avro call gets
    assert json.loads(refused[0].payload)["latency_ms"] == "fast"


@pytest.mark.parametrize(("payload", "code"), [(b"{broken", "corrupt_json"), (b"[]", "invalid_batch"),
                                               (json.dumps([_call(i) for i in range(101)]).encode(), "invalid_batch")])
def test_unreadable_json_records_are_refused_whole(decoder: CallDecoder, payload: bytes, code: str) -> None:
    calls, refused = decoder.decode(payload, NOW_MS)
    assert calls is None and [r.code for r in refused] == [code] and refused[0].payload == payload
