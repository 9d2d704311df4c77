"""Bad inputs for the calls topic, each with what the worker must make of it.

A ``Hostile`` is one Kafka record plus the expected outcome: how many dead letters it yields and with which
``reason_code``, and how many of its calls must still be counted (a batch with one bad call among good ones
yields one ``invalid_field`` dead letter and counts the rest). ``expected_reason`` is an independent oracle
of the documented validation limits (processors/settings.py ValidationLimits), used to judge
hypothesis-generated calls; generated values stay well clear of each limit so the oracle never has to guess
about a boundary.
"""

from __future__ import annotations

import math
import os
import random
import re
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from llmpulse.producers.batching import BatchEncoder, new_event_id

HOUR_MS = 3_600_000
MAX_NAME, MAX_TEXT, MAX_LABELS, MAX_LABEL_CHARS = 256, 100_000, 32, 256
MAX_LATENCY_MS, MAX_TOKENS = 3_600_000.0, 10_000_000
MAX_FUTURE_MS, MAX_AGE_MS = 300_000, 7 * 24 * HOUR_MS
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never valid inside a service, provider or model name
_ENCODER = BatchEncoder(producer_id="hostile")


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str
    value: bytes
    reason_code: str | None  # expected dead-letter reason; None when the record is wholly valid
    dead_letters: int = 1
    valid_calls: int = 0
    key: bytes | None = None


def good_call(rng: random.Random, now_ms: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": new_event_id(), "timestamp_ms": now_ms - rng.randrange(60_000), "service": "hostile-good",
        "provider": "openai", "request_model": "gpt-4o-mini", "status": "ok",
        "latency_ms": 20.0 + rng.random() * 200, "input_tokens": rng.randrange(1, 500),
        "output_tokens": rng.randrange(1, 200), "cost_micros": rng.randrange(1, 1000),
    }
    row.update(overrides)
    return row


def call_record(row: dict[str, Any]) -> bytes:
    return _ENCODER.encode_call(row)


def batch_record(rows: list[dict[str, Any]]) -> bytes:
    return _ENCODER.encode_batch(rows)


def valid_batch(rng: random.Random, now_ms: int, size: int, services: list[str]) -> Hostile:
    """Good calls spread over many services (label cardinality pressure); counted, never dead-lettered."""
    rows = [good_call(rng, now_ms, service=rng.choice(services)) for _ in range(size)]
    return Hostile("valid_batch", batch_record(rows), None, dead_letters=0, valid_calls=size)


# ---- whole records the decoder cannot read ---------------------------------------------------------------


def undecodable(rng: random.Random, now_ms: int) -> list[Hostile]:
    """One of each way a record can be unreadable."""
    good = batch_record([good_call(rng, now_ms) for _ in range(5)])
    single = call_record(good_call(rng, now_ms, service="AAAAAAAA"))
    cut = rng.randrange(12, len(good) - 1)
    out = [
        Hostile("bad_magic", b"\x7fELF" + os.urandom(rng.randrange(8, 200)), "bad_magic"),
        # Confluent wire format (magic 0 + schema id) with no registry configured on the worker.
        Hostile("registry_framing_without_registry", b"\x00\x00\x00\x00\x07" + good[10:], "unknown_schema"),
        # JSON calls are accepted on the calls topic (docs/schemas.md): one missing its required fields is refused
        Hostile("json_incomplete_call", b'{"service": "x", "latency_ms": 1}', "invalid_field"),
        Hostile("unknown_fingerprint", b"\xc3\x01" + os.urandom(8) + good[10:], "unknown_schema"),
        Hostile("short_header", b"\xc3\x01\x05", "truncated"),
        Hostile("truncated_avro", good[:cut], "corrupt_avro"),
        Hostile("trailing_bytes", good + b"\x00\x01\x02", "trailing_bytes"),
        Hostile("empty_value", b"", "empty"),
        # Invalid UTF-8 inside an Avro string: the service name's bytes replaced after encoding.
        Hostile("invalid_utf8", single.replace(b"AAAAAAAA", b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28"), "corrupt_avro"),
    ]
    return out


def inconsistent_batches(rng: random.Random, now_ms: int) -> list[Hostile]:
    """Readable Avro whose columns contradict each other."""
    rows = [good_call(rng, now_ms) for _ in range(4)]
    columns = _ENCODER.columns(rows)
    short = {**columns, "latency_ms": columns["latency_ms"][:-8]}
    liar = {**columns, "count": 1_000_000_000}
    zero = {**columns, "count": 0}
    codes = struct.pack("<4i", 0, 0, 7, 0)  # code 7 into a one-value dictionary
    bad_codes = {**columns, "service": {"values": columns["service"]["values"], "codes": codes}}
    return [
        Hostile(kind, _ENCODER.batch_codec.encode(record), "invalid_batch")
        for kind, record in (("short_column", short), ("count_lies", liar), ("count_zero", zero),
                             ("dictionary_code_out_of_range", bad_codes))
    ]


def bad_status_code(rng: random.Random, now_ms: int, size: int = 6) -> Hostile:
    """A batch whose packed status byte is outside the enum: that call alone is refused."""
    rows = [good_call(rng, now_ms) for _ in range(size)]
    columns = _ENCODER.columns(rows)
    status = bytearray(columns["status"])
    status[2] = 250
    record = {**columns, "status": bytes(status)}
    return Hostile("status_out_of_range", _ENCODER.batch_codec.encode(record), "invalid_field",
                   valid_calls=size - 1)


def oversized(rng: random.Random, now_ms: int, mb: int = 10) -> Hostile:
    """A single call carrying a ``mb`` MB prompt: above the worker's record limit (8 MB by default)."""
    text = "x" * (mb * 1024 * 1024)
    return Hostile("text_10mb", call_record(good_call(rng, now_ms, prompt_text=text)), "oversized")


# ---- readable calls with values out of bounds --------------------------------------------------------------


def bad_field_values(now_ms: int) -> dict[str, dict[str, Any]]:
    """kind -> overrides that make one call invalid_field."""
    return {
        "negative_input_tokens": {"input_tokens": -5},
        "negative_output_tokens": {"output_tokens": -1},
        "huge_tokens": {"input_tokens": 2_000_000_000},
        "nan_latency": {"latency_ms": math.nan},
        "inf_latency": {"latency_ms": math.inf},
        "negative_latency": {"latency_ms": -3.0},
        "latency_beyond_an_hour": {"latency_ms": 5e9},
        "inf_ttft": {"ttft_ms": -math.inf},
        "ttft_after_latency": {"latency_ms": 10.0, "ttft_ms": 50.0},
        "negative_cost": {"cost_micros": -500},
        "confidence_above_one": {"confidence": 7.5},
        "timestamp_far_future": {"timestamp_ms": now_ms + 365 * 24 * HOUR_MS},
        "timestamp_far_past": {"timestamp_ms": 946_684_800_000},
        "timestamp_zero": {"timestamp_ms": 0},
        "empty_service": {"service": ""},
        "control_chars_in_service": {"service": "svc\x1fmodel\x1fprovider"},
        "nul_in_model": {"request_model": "gpt\x00-4o"},
        "service_name_too_long": {"service": "s" * 5000},
        "text_over_limit": {"response_text": "y" * 300_000},
        "huge_label_value": {"labels": {"tenant": "v" * 100_000}},
        "numerous_labels": {"labels": {f"k{i}": str(i) for i in range(5000)}},
    }


def bad_single_calls(rng: random.Random, now_ms: int) -> list[Hostile]:
    return [Hostile(kind, call_record(good_call(rng, now_ms, **bad)), "invalid_field")
            for kind, bad in bad_field_values(now_ms).items()]


def one_bad_among_good(rng: random.Random, now_ms: int, size: int = 20) -> list[Hostile]:
    """Each bad value inside an otherwise good batch: one dead letter, ``size - 1`` calls still counted."""
    out = []
    for kind, bad in bad_field_values(now_ms).items():
        rows = [good_call(rng, now_ms) for _ in range(size)]
        rows[rng.randrange(size)].update(bad)
        out.append(Hostile(f"batch_with_{kind}", batch_record(rows), "invalid_field", valid_calls=size - 1))
    return out


# ---- generated calls and their oracle ------------------------------------------------------------------------


def _field_strategies(now_ms: int) -> dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]:
    """field -> (clearly valid values, clearly invalid values)."""
    int32 = st.integers(-(2**31), 2**31 - 1)
    name = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
    return {
        "service": (name.map(lambda s: f"gen-{s}"), st.sampled_from(["", "n" * 300])),
        "latency_ms": (st.floats(0, 60_000), st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v <= 2 * MAX_LATENCY_MS),
            st.floats(2 * MAX_LATENCY_MS, 1e300))),
        "input_tokens": (st.integers(0, MAX_TOKENS), int32.filter(lambda v: v < 0 or v > MAX_TOKENS)),
        "confidence": (st.one_of(st.none(), st.floats(0, 1)), st.floats(1.5, 1e9)),
        "timestamp_ms": (
            st.integers(now_ms - 6 * 24 * HOUR_MS, now_ms),
            st.one_of(st.integers(-(2**62), now_ms - 8 * 24 * HOUR_MS), st.integers(now_ms + HOUR_MS, 2**62))),
        "cost_micros": (st.one_of(st.none(), st.integers(0, 10**9)), st.integers(-(2**62), -2)),
        "labels": (
            st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
            st.dictionaries(st.text(min_size=300, max_size=400), st.text(max_size=5), min_size=1, max_size=2)),
    }


def call_fields(now_ms: int) -> st.SearchStrategy[dict[str, Any]]:
    """Field values for one llm_call: all clearly valid, then one or two fields
    replaced by clearly invalid values (about half the time)."""
    fields = _field_strategies(now_ms)

    @st.composite
    def draw(data: st.DrawFn) -> dict[str, Any]:
        row = {name: data(valid) for name, (valid, _) in fields.items()}
        broken = data(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True)
                      | st.just([]))
        for name in broken:
            row[name] = data(fields[name][1])
        return row

    return draw()


def expected_reason(row: dict[str, Any], now_ms: int) -> str | None:
    """None when the documented limits accept the call, else ``invalid_field``."""
    latency, ttft = row["latency_ms"], row.get("ttft_ms")
    confidence, cost = row.get("confidence"), row.get("cost_micros")
    ok = (
        math.isfinite(latency) and 0 <= latency <= MAX_LATENCY_MS
        and (ttft is None or (math.isfinite(ttft) and 0 <= ttft <= latency))
        and all(0 <= row.get(name, 0) <= MAX_TOKENS for name in ("input_tokens", "output_tokens", "cached_tokens"))
        and (cost is None or cost >= 0)
        and (confidence is None or math.isnan(confidence) or 0 <= confidence <= 1)
        and now_ms - MAX_AGE_MS <= row["timestamp_ms"] <= now_ms + MAX_FUTURE_MS
        and all(1 <= len(row[name]) <= MAX_NAME and not _CONTROL.search(row[name])
                for name in ("service", "provider", "request_model"))
        and all(len(row.get(name) or "") <= MAX_TEXT for name in ("prompt_text", "response_text"))
        and len(row.get("labels") or {}) <= MAX_LABELS
        and all(max(len(k), len(v)) <= MAX_LABEL_CHARS for k, v in (row.get("labels") or {}).items())
    )
    return None if ok else "invalid_field"


def generated(rng: random.Random, now_ms: int, fields: dict[str, Any]) -> Hostile:
    """A hypothesis example as a single-call record, judged by the oracle."""
    row = good_call(rng, now_ms, **fields)
    reason = expected_reason(row, now_ms)
    valid = reason is None
    return Hostile("generated_valid" if valid else "generated_invalid", call_record(row), reason,
                   dead_letters=0 if valid else 1, valid_calls=1 if valid else 0)
