"""Columnar packing of calls into llm_call_batch records: known layouts, sentinels, refusals."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from llmpulse.producers.batching import DEFAULTS, FIELDS, PACKED, BatchEncoder, new_event_id

NOW_MS = 1_700_000_000_000


def _call(i: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "timestamp_ms": NOW_MS + i,
        "service": "checkout",
        "provider": "openai",
        "request_model": "gpt-4o",
        "status": "ok",
        "latency_ms": 100.0 + i,
    }
    row.update(fields)
    return row


def _unpack(record: dict[str, Any], name: str) -> list[Any]:
    typecode = PACKED[name][0]
    return [v[0] for v in struct.iter_unpack("<" + typecode, record[name])]


@pytest.fixture(scope="module")
def encoder() -> BatchEncoder:
    return BatchEncoder(producer_id="unit-test")


def test_packed_numbers_are_little_endian_with_sentinels_for_absent(encoder: BatchEncoder) -> None:
    rows = [
        _call(0, ttft_ms=12.5, cost_micros=1500, confidence=0.9, input_tokens=10, cache_hit=True),
        _call(1, ttft_ms=None, cost_micros=None, confidence=None, status="rate_limited"),
        _call(2),  # optional fields simply left out
    ]
    record = encoder.columns(rows)
    assert record["count"] == 3
    assert record["producer_id"] == "unit-test"
    assert _unpack(record, "timestamp_ms") == [NOW_MS, NOW_MS + 1, NOW_MS + 2]
    assert _unpack(record, "latency_ms") == [100.0, 101.0, 102.0]
    assert _unpack(record, "cost_micros") == [1500, -1, -1]
    assert _unpack(record, "status") == [0, 3, 0]
    assert _unpack(record, "input_tokens") == [10, 0, 0]
    assert _unpack(record, "cache_hit") == [1, 0, 0]
    ttft = _unpack(record, "ttft_ms")
    confidence = _unpack(record, "confidence")
    assert ttft[0] == 12.5 and math.isnan(ttft[1]) and math.isnan(ttft[2])
    assert confidence[0] == 0.9 and math.isnan(confidence[1]) and math.isnan(confidence[2])
    # Explicit little-endian: the first timestamp's low byte comes first whatever the host.
    assert record["timestamp_ms"][:8] == struct.pack("<q", NOW_MS)


def test_repeated_strings_are_dictionary_encoded_in_first_seen_order(encoder: BatchEncoder) -> None:
    users = ["u-b", None, "u-a", "u-b", None, "u-c"]
    record = encoder.columns([_call(i, user_hash=u) for i, u in enumerate(users)])
    column = record["user_hash"]
    assert column["values"] == ["u-b", "u-a", "u-c"]
    assert [c[0] for c in struct.iter_unpack("<i", column["codes"])] == [0, -1, 1, 0, -1, 2]
    assert record["service"]["values"] == ["checkout"]
    # operation has a schema default ("chat") that applies when the caller leaves it out.
    assert record["operation"]["values"] == ["chat"]
    assert record["feature"] == {"values": [], "codes": struct.pack("<6i", *([-1] * 6))}


def test_optional_string_and_label_columns_are_null_when_no_call_has_one(encoder: BatchEncoder) -> None:
    plain = encoder.columns([_call(0), _call(1)])
    assert all(plain[name] is None for name in ("trace_id", "span_id", "prompt_sha256", "prompt_text", "labels"))
    mixed = encoder.columns([_call(0, prompt_text="hi", labels={"team": "a"}), _call(1)])
    assert mixed["prompt_text"] == ["hi", None]
    assert mixed["labels"] == [{"team": "a"}, {}]
    assert mixed["event_id"] == ["ev-0", "ev-1"]


def test_encoded_batch_decodes_to_the_same_record(encoder: BatchEncoder) -> None:
    rows = [_call(0, labels={"k": "v"}, trace_id="abc"), _call(1, user_hash="u1", confidence=0.25)]
    data = encoder.encode_batch(rows)
    assert encoder.batch_codec.decode(data) == encoder.columns(rows)


def test_single_call_record_fills_schema_defaults(encoder: BatchEncoder) -> None:
    decoded = encoder.call_codec.decode(encoder.encode_call(_call(7)))
    assert decoded["event_id"] == "ev-7"
    assert decoded["operation"] == "chat"
    assert decoded["input_tokens"] == 0
    assert decoded["cost_micros"] is None
    assert decoded["labels"] == {}
    assert set(decoded) == {name for name, _, _ in FIELDS}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"status": "weird"}, KeyError),
        ({"input_tokens": "many"}, TypeError),
        ({"input_tokens": 2**31}, OverflowError),
        ({"timestamp_ms": 1.7e12}, TypeError),  # a float timestamp is a caller bug, not silently truncated
        ({"user_hash": ["not", "hashable"]}, TypeError),
    ],
)
def test_calls_that_cannot_fit_raise_a_plain_error(encoder: BatchEncoder, fields: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        encoder.columns([_call(0), _call(1, **fields)])


def test_a_non_string_value_is_refused_by_the_encoder(encoder: BatchEncoder) -> None:
    with pytest.raises((ValueError, TypeError)):
        encoder.encode_batch([_call(0, prompt_text=12345)])


def test_defaults_come_from_the_contract() -> None:
    assert DEFAULTS["operation"] == "chat"
    assert DEFAULTS["labels"] == {}
    assert DEFAULTS["ttft_ms"] is None


def test_event_ids_are_unique_hex() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
