"""find_invalid: one reason per malformed call, limits inclusive at their bounds, first failed check named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.validation import Limits, find_invalid
from llmpulse.processors.wire.calls import to_call_columns
from llmpulse.producers.batching import BatchEncoder

NOW_MS = 1_700_000_000_000
_ENCODER = BatchEncoder(producer_id="validation-test")


def _call(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": "ev",
        "timestamp_ms": NOW_MS,
        "service": "checkout",
        "provider": "openai",
        "request_model": "gpt-4o",
        "status": "ok",
        "latency_ms": 100.0,
    }
    row.update(fields)
    return row


def _columns(rows: list[dict[str, Any]]) -> CallColumns:
    return to_call_columns(_ENCODER.batch_codec.decode(_ENCODER.encode_batch(rows)))


def _reasons(rows: list[dict[str, Any]], limits: Limits | None = None) -> list[str | None]:
    calls = _columns(rows)
    coded = find_invalid(calls, limits or Limits(), NOW_MS).tolist()
    plain = calls.take(np.ones(len(calls), dtype=bool))
    plain.codes = {}  # the same answer must come from plain object arrays as from dictionary codes
    assert find_invalid(plain, limits or Limits(), NOW_MS).tolist() == coded
    return coded


def _reason(limits: Limits | None = None, **fields: Any) -> str | None:
    return _reasons([_call(**fields)], limits)[0]


VALID = [
    {},
    {"latency_ms": 0.0},
    {"latency_ms": 3_600_000.0},
    {"ttft_ms": 100.0},  # equal to latency
    {"ttft_ms": 0.0},
    {"ttft_ms": None},
    {"confidence": 0.0},
    {"confidence": 1.0},
    {"confidence": None},
    {"cost_micros": 0},
    {"cost_micros": None},
    {"input_tokens": 10_000_000},
    {"timestamp_ms": NOW_MS + 300_000},
    {"timestamp_ms": NOW_MS - 7 * 24 * 3600 * 1000},
    {"service": "s" * 256},
    {"labels": {f"k{i}": "v" for i in range(32)}},
    {"labels": {"k" * 256: "v" * 256}},
    {"prompt_text": "p" * 100_000},
    {"status": "filtered"},
]


@pytest.mark.parametrize("fields", VALID, ids=[str(sorted(f))[:40] or "plain" for f in VALID])
def test_values_at_the_limits_are_valid(fields: dict[str, Any]) -> None:
    assert _reason(**fields) is None


INVALID = [
    ({"latency_ms": -0.5}, "latency_ms must be a finite number >= 0"),
    ({"latency_ms": math.inf}, "latency_ms must be a finite number >= 0"),
    ({"latency_ms": 3_600_001.0}, "latency_ms exceeds 3600000"),
    ({"ttft_ms": -1.0}, "ttft_ms must be finite, >= 0 and <= latency_ms"),
    ({"ttft_ms": 100.5}, "ttft_ms must be finite, >= 0 and <= latency_ms"),
    ({"ttft_ms": -math.inf}, "ttft_ms must be finite, >= 0 and <= latency_ms"),
    ({"output_tokens": -1}, "output_tokens must be in [0, 10000000]"),
    ({"cached_tokens": 10_000_001}, "cached_tokens must be in [0, 10000000]"),
    ({"cost_micros": -2}, "cost_micros must be >= 0"),
    ({"confidence": -0.01}, "confidence must be in [0, 1]"),
    ({"confidence": math.inf}, "confidence must be in [0, 1]"),
    ({"timestamp_ms": NOW_MS + 300_001}, "timestamp_ms is more than 300s ahead"),
    ({"timestamp_ms": NOW_MS - 7 * 24 * 3600 * 1000 - 1}, "timestamp_ms is older than 604800s"),
    ({"service": ""}, "service must be 1-256 chars"),
    ({"service": None}, "service must be 1-256 chars"),
    ({"provider": "p" * 257}, "provider must be 1-256 chars"),
    ({"request_model": ""}, "model must be 1-256 chars"),
    ({"response_text": "r" * 100_001}, "response_text exceeds 100000 chars"),
    ({"labels": {f"k{i}": "v" for i in range(33)}}, "more than 32 labels"),
    ({"labels": {"team": "v" * 257}}, "a label key or value exceeds 256 chars"),
]


@pytest.mark.parametrize(("fields", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_each_check_names_its_field(fields: dict[str, Any], reason: str) -> None:
    assert _reason(**fields) == reason


def test_only_the_bad_calls_get_a_reason() -> None:
    rows = [_call(), _call(input_tokens=-3), _call(), _call(confidence=2.0), _call()]
    assert _reasons(rows) == [
        None,
        "input_tokens must be in [0, 10000000]",
        None,
        "confidence must be in [0, 1]",
        None,
    ]


def test_the_first_failed_check_is_reported() -> None:
    # Both latency and service are wrong: latency is checked first.
    assert _reason(latency_ms=-1.0, service="") == "latency_ms must be a finite number >= 0"
    assert _reason(confidence=7.0, timestamp_ms=NOW_MS + 10**9) == "confidence must be in [0, 1]"


def test_limits_are_configurable() -> None:
    strict = Limits(max_name_chars=8, max_labels=1, max_future_skew_s=0, max_latency_ms=50.0)
    assert _reason(strict, latency_ms=60.0) == "latency_ms exceeds 50"
    assert _reason(strict, latency_ms=50.0, service="ninenine9") == "service must be 1-8 chars"
    assert _reason(strict, latency_ms=50.0, timestamp_ms=NOW_MS + 1) == "timestamp_ms is more than 0s ahead"
    assert _reason(strict, latency_ms=50.0, labels={"a": "1", "b": "2"}) == "more than 1 labels"
    assert _reason(strict, latency_ms=50.0, service="eight888", labels={"a": "1"}) is None


def test_out_of_range_status_codes_are_refused() -> None:
    calls = _columns([_call(), _call()])
    calls.status = np.array([6, -1], dtype=np.int8)  # 5 is ``denied`` (llm_call v2): refused by the SDK's gate
    assert find_invalid(calls, Limits(), NOW_MS).tolist() == ["status must be a code in 0..5"] * 2


def test_empty_batch_has_no_reasons() -> None:
    calls = _columns([_call()]).take(np.zeros(1, dtype=bool))
    assert find_invalid(calls, Limits(), NOW_MS).tolist() == []
