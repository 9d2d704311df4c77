"""Record bytes -> CallColumns + Refused: exact values back, one bad call refused alone, bad batches refused whole."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from llmpulse.processors.core.columns import NO_COST, STATUS_CODE, CallColumns
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder, row_at
from llmpulse.producers.batching import FIELDS, BatchEncoder

NOW_MS = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


def _call(i: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "timestamp_ms": NOW_MS - 1000 + i,
        "service": "checkout",
        "provider": "openai",
        "request_model": "gpt-4o",
        "status": "ok",
        "latency_ms": 200.0 + i,
        "input_tokens": 10 + i,
        "output_tokens": 5,
    }
    row.update(fields)
    return row


def _mixed_calls() -> list[dict[str, Any]]:
    return [
        _call(0, ttft_ms=50.0, cost_micros=1234, confidence=0.75, labels={"team": "pay"}, prompt_text="hello"),
        _call(1, ttft_ms=None, cost_micros=None, confidence=None, status="error", error_type="APIError:500"),
        _call(2, response_text="bye", user_hash="u1", cache_hit=True, no_answer=True, labels={"a": "1", "b": "2"}),
        _call(3, service="search", request_model="claude", provider="anthropic", status="timeout", feature="faq"),
        _call(4, experiment_id="exp", variant="b", cached_tokens=3, trace_id="t" * 32, span_id="s" * 16),
    ]


@pytest.fixture(scope="module")
def encoder() -> BatchEncoder:
    return BatchEncoder(producer_id="unit-test")


@pytest.fixture(scope="module")
def decoder() -> CallDecoder:
    return CallDecoder(Limits(), max_record_bytes=1 << 20, max_calls_per_batch=1000)


def _accepted(decoder: CallDecoder, data: bytes) -> CallColumns:
    calls, refused = decoder.decode(data, NOW_MS)
    assert refused == []
    assert calls is not None
    return calls


def _expected(rows: list[dict[str, Any]], name: str, missing: Any = None) -> list[Any]:
    return [row.get(name, missing) if row.get(name) is not None else missing for row in rows]


def _same(actual: np.ndarray, expected: list[Any]) -> bool:
    return all((a != a and e != e) or a == e for a, e in zip(actual.tolist(), expected, strict=True))


def test_mixed_optional_values_decode_exactly(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    rows = _mixed_calls()
    calls = _accepted(decoder, encoder.encode_batch(rows))
    assert len(calls) == 5
    assert calls.event_id.tolist() == [f"ev-{i}" for i in range(5)]
    assert calls.timestamp_ms.tolist() == [r["timestamp_ms"] for r in rows]
    assert calls.latency_ms.tolist() == [200.0, 201.0, 202.0, 203.0, 204.0]
    assert _same(calls.ttft_ms, [50.0, math.nan, math.nan, math.nan, math.nan])
    assert calls.cost_micros.tolist() == [1234, NO_COST, NO_COST, NO_COST, NO_COST]
    assert _same(calls.confidence, [0.75, math.nan, math.nan, math.nan, math.nan])
    assert calls.status.tolist() == [STATUS_CODE[r["status"]] for r in rows]
    assert calls.input_tokens.tolist() == [10, 11, 12, 13, 14]
    assert calls.cached_tokens.tolist() == [0, 0, 0, 0, 3]
    assert calls.cache_hit.tolist() == [False, False, True, False, False]
    assert calls.no_answer.tolist() == [False, False, True, False, False]
    assert calls.service.tolist() == ["checkout"] * 3 + ["search", "checkout"]
    assert calls.model.tolist() == ["gpt-4o"] * 3 + ["claude", "gpt-4o"]
    assert calls.provider.tolist() == ["openai"] * 3 + ["anthropic", "openai"]
    for name in ("error_type", "user_hash", "experiment_id", "variant", "feature", "prompt_text", "response_text"):
        assert getattr(calls, name).tolist() == _expected(rows, name), name
    assert calls.labels == [{"team": "pay"}, {}, {"a": "1", "b": "2"}, {}, {}]


def test_row_at_rebuilds_every_original_call(encoder: BatchEncoder) -> None:
    rows = _mixed_calls()
    record = encoder.batch_codec.decode(encoder.encode_batch(rows))
    defaults = {name: default for name, default, _ in FIELDS}
    for i, row in enumerate(rows):
        assert row_at(record, i) == {**defaults, **row}


def test_many_distinct_users_stay_dictionary_encoded(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    rng = np.random.default_rng(7)
    users = [f"user-{n}" if n % 10 else None for n in rng.integers(0, 3000, size=5000).tolist()]
    rows = [_call(i, user_hash=u, event_id=f"e{i}") for i, u in enumerate(users)]
    decoder_big = CallDecoder(Limits(), max_record_bytes=1 << 22, max_calls_per_batch=10_000)
    calls = _accepted(decoder_big, encoder.encode_batch(rows))
    assert calls.user_hash.tolist() == users
    codes, values = calls.codes["user_hash"]
    assert len(values) - 1 == len({u for u in users if u is not None})  # plus the trailing None slot
    assert values[codes].tolist() == users


def test_a_single_llm_call_takes_the_same_path(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    row = _mixed_calls()[2]
    single = _accepted(decoder, encoder.encode_call(row))
    batch = _accepted(decoder, encoder.encode_batch([row]))
    for name in CallColumns.__dataclass_fields__:
        if name == "codes" or name.startswith("_"):
            continue
        a, b = getattr(single, name), getattr(batch, name)
        assert (a == b if isinstance(a, list) else _same(a, b.tolist())), name
    assert single.user_hash.tolist() == ["u1"]


INVALID = [
    ({"input_tokens": -5}, "input_tokens must be in [0, 10000000]"),
    ({"latency_ms": math.nan}, "latency_ms must be a finite number >= 0"),
    ({"ttft_ms": math.inf}, "ttft_ms must be finite, >= 0 and <= latency_ms"),
    ({"ttft_ms": 500.0, "latency_ms": 100.0}, "ttft_ms must be finite, >= 0 and <= latency_ms"),
    ({"confidence": 1.5}, "confidence must be in [0, 1]"),
    ({"timestamp_ms": NOW_MS + DAY_MS}, "timestamp_ms is more than 300s ahead"),
    ({"service": "s" * 300}, "service must be 1-256 chars"),
    ({"labels": {f"k{n}": "v" for n in range(40)}}, "more than 32 labels"),
]


@pytest.mark.parametrize(("fields", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_one_invalid_call_is_refused_alone(
    encoder: BatchEncoder, decoder: CallDecoder, fields: dict[str, Any], reason: str
) -> None:
    rows = [_call(i) for i in range(5)]
    rows[2] = _call(2, **fields)
    calls, refused = decoder.decode(encoder.encode_batch(rows), NOW_MS)
    assert calls is not None
    assert calls.event_id.tolist() == ["ev-0", "ev-1", "ev-3", "ev-4"]
    assert calls.input_tokens.tolist() == [10, 11, 13, 14]
    assert len(refused) == 1
    assert (refused[0].code, refused[0].reason, refused[0].batch_index) == ("invalid_field", reason, 2)
    replay = decoder.call_codec.decode(refused[0].payload)
    assert replay["event_id"] == "ev-2"
    for name, value in fields.items():
        assert replay[name] == value or (value != value and replay[name] != replay[name]), name


def test_an_invalid_single_call_is_refused_with_its_own_bytes(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    calls, refused = decoder.decode(encoder.encode_call(_call(9, output_tokens=-1)), NOW_MS)
    assert calls is None
    assert [(r.code, r.batch_index) for r in refused] == [("invalid_field", 0)]
    assert decoder.call_codec.decode(refused[0].payload)["event_id"] == "ev-9"


def test_all_invalid_gives_no_columns(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    data = encoder.encode_batch([_call(0, confidence=-1.0), _call(1, latency_ms=-1.0)])
    calls, refused = decoder.decode(data, NOW_MS)
    assert calls is None
    assert [r.batch_index for r in refused] == [0, 1]


def _refusal(decoder: CallDecoder, data: bytes) -> tuple[str, str]:
    calls, refused = decoder.decode(data, NOW_MS)
    assert calls is None and len(refused) == 1
    assert refused[0].payload == data  # the whole record goes to the dead-letter topic as it came
    return refused[0].code, refused[0].reason


def _tampered(encoder: BatchEncoder, change: dict[str, Any]) -> bytes:
    record = encoder.columns([_call(0, trace_id="t0", labels={"x": "y"}), _call(1, trace_id="t1")])
    record.update(change)
    return encoder.batch_codec.encode(record)


def test_empty_batch_is_invalid(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    empty = encoder.columns([])
    assert _refusal(decoder, encoder.batch_codec.encode(empty)) == ("invalid_batch", "batch count 0 not in 1..1000")


def test_batch_over_the_call_limit_is_invalid(encoder: BatchEncoder) -> None:
    small = CallDecoder(Limits(), max_record_bytes=1 << 20, max_calls_per_batch=3)
    code, reason = _refusal(small, encoder.encode_batch([_call(i) for i in range(4)]))
    assert (code, reason) == ("invalid_batch", "batch count 4 not in 1..3")


@pytest.mark.parametrize(
    "change",
    [
        {"count": 3},
        {"latency_ms": b"\x00" * 8},
        {"event_id": ["only-one"]},
        {"service": {"values": ["a"], "codes": b"\x00\x00\x00\x00"}},
        {"service": {"values": ["a"], "codes": b"\x05\x00\x00\x00" * 2}},  # code beyond the dictionary
        {"labels": [{}]},
        {"prompt_text": ["a", "b", "c"]},
        # Columns no detector reads must still match: a refused batch-mate is rebuilt from all of them.
        {"prompt_chars": b"\x00" * 4},
        {"session_id": {"values": [], "codes": b""}},
        {"trace_id": ["t0"]},
    ],
    ids=lambda change: next(iter(change)),
)
def test_mismatching_columns_make_the_batch_invalid(
    encoder: BatchEncoder, decoder: CallDecoder, change: dict[str, Any]
) -> None:
    assert _refusal(decoder, _tampered(encoder, change))[0] == "invalid_batch"


def test_unknown_status_code_is_refused_not_counted(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    calls, refused = decoder.decode(_tampered(encoder, {"status": bytes([0, 9])}), NOW_MS)
    assert calls is not None and calls.event_id.tolist() == ["ev-0"]
    assert [(r.code, r.reason, r.batch_index) for r in refused] == [
        ("invalid_field", "status must be a code in 0..5", 1)
    ]
    assert b"ev-1" in refused[0].payload  # no llm_call can hold status 9: a readable trace instead


def test_oversized_record(encoder: BatchEncoder) -> None:
    data = encoder.encode_batch([_call(0, prompt_text="x" * 2000)])
    tight = CallDecoder(Limits(), max_record_bytes=len(data) - 1, max_calls_per_batch=10)
    code, reason = _refusal(tight, data)
    assert code == "oversized"
    assert reason == f"record of {len(data)} bytes exceeds {len(data) - 1}"
    assert CallDecoder(Limits(), len(data), 10).decode(data, NOW_MS)[1] == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "truncated"),
        (b"\xc3\x01\x00", "truncated"),
        (b"<xml>not a call</xml>", "bad_magic"),
        (b'{"json": true', "corrupt_json"),  # JSON records are read (test_wire_json_calls.py); broken JSON is not
        (b"\xc3\x01" + b"\x11" * 8 + b"body", "unknown_schema"),
    ],
)
def test_bytes_that_are_no_call_record(decoder: CallDecoder, data: bytes, code: str) -> None:
    assert _refusal(decoder, data)[0] == code


def test_corrupt_batch_body(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    data = encoder.encode_batch([_call(0), _call(1)])
    assert _refusal(decoder, data[:-20])[0] == "corrupt_avro"
    assert _refusal(decoder, data + b"\x00")[0] == "trailing_bytes"


# ---- columns: take / factorize / group_by on what decode produced -------------------------------------


def _grouped_calls(encoder: BatchEncoder, decoder: CallDecoder) -> CallColumns:
    services = ["a", "b", "a", "c", "b", "a", "c", "a"]
    models = ["m1", "m1", "m2", "m1", "m1", "m1", "m2", "m2"]
    users = ["u1", None, "u2", None, "u1", "u3", None, "u2"]
    rows = [
        _call(i, service=s, request_model=m, user_hash=u, labels={"i": str(i)})
        for i, (s, m, u) in enumerate(zip(services, models, users, strict=True))
    ]
    return _accepted(decoder, encoder.encode_batch(rows))


def test_take_with_a_mask_keeps_codes_and_labels_aligned(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    calls = _grouped_calls(encoder, decoder)
    mask = np.array([True, False, False, True, True, False, True, True])
    kept = calls.take(mask)
    assert len(kept) == 5
    assert kept.event_id.tolist() == ["ev-0", "ev-3", "ev-4", "ev-6", "ev-7"]
    assert [m["i"] for m in kept.labels] == ["0", "3", "4", "6", "7"]
    for name, (codes, values) in kept.codes.items():
        assert values[codes].tolist() == getattr(kept, name).tolist(), name
    assert kept.user_hash.tolist() == ["u1", None, "u1", None, "u2"]
    by_index = calls.take(np.array([7, 0]))
    assert by_index.event_id.tolist() == ["ev-7", "ev-0"]
    assert by_index.service.tolist() == ["a", "a"]


def _members(keys: list[tuple[Any, ...]], inverse: np.ndarray) -> dict[tuple[Any, ...], list[int]]:
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for position, group in enumerate(inverse.tolist()):
        groups[keys[group]].append(position)
    return dict(groups)


@pytest.mark.parametrize("names", [("service",), ("service", "model"), ("user_hash",), ("model", "user_hash")])
def test_group_by_codes_and_plain_strings_agree(encoder: BatchEncoder, decoder: CallDecoder, names: tuple) -> None:
    calls = _grouped_calls(encoder, decoder)
    assert set(names) <= set(calls.codes)  # the fast path is what is being compared
    plain = calls.take(np.ones(len(calls), dtype=bool))
    plain.codes = {}
    coded_groups = _members(*calls.group_by(*names))
    plain_groups = _members(*plain.group_by(*names))
    assert coded_groups == plain_groups
    columns = [getattr(calls, n).tolist() for n in names]
    expected: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(*columns, strict=True)):
        expected[key].append(i)
    assert coded_groups == dict(expected)


def test_group_by_after_take_only_names_present_keys(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    calls = _grouped_calls(encoder, decoder).take(np.array([1, 4]))
    keys, inverse = calls.group_by("service", "model")
    assert keys == [("b", "m1")]
    assert inverse.tolist() == [0, 0]


def test_factorize_reconstructs_the_column(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    calls = _grouped_calls(encoder, decoder)
    for name in ("service", "user_hash", "prompt_text"):  # prompt_text has no dictionary: the plain path
        codes, values = calls.factorize(name)
        assert codes.min() >= 0
        assert values[codes].tolist() == getattr(calls, name).tolist(), name


def test_records_decoded_together_get_what_each_gets_decoded_alone(encoder: BatchEncoder, decoder: CallDecoder) -> None:
    """The calls agent checks a partition's records in one pass (check_all): each record must still get exactly its
    own accepted calls and refusals, whatever its neighbours hold."""
    bad = iter(fields for fields, _reason in INVALID)
    values = [
        encoder.encode_batch([_call(0), _call(1, **next(bad)), _call(2)]),
        encoder.encode_call(_call(3, **next(bad))),  # a single llm_call, refused whole
        encoder.encode_batch([_call(4, service="search", labels={"a": "b"}), _call(5)]),  # all accepted
        b"\x00\x01 not a call record",
        encoder.encode_batch([_call(6, **next(bad)), _call(7, **next(bad))]),  # every call refused
        # JSON: a call that misfits the schema, a good one, an invalid one
        b'[{"event_id": "ev-8"}, ' + _json_call(9) + b", " + _json_call(10, confidence=2.0) + b"]",
        encoder.encode_batch([_call(11, user_hash=f"u{n}", request_model=f"m{n % 3}") for n in range(30)]),
        encoder.encode_batch([_call(12, **next(bad)), *[_call(13 + n) for n in range(4)]]),
        _tampered(encoder, {"service": {"values": ["a"], "codes": b"\x05\x00\x00\x00" * 2}}),  # refused whole
        encoder.encode_batch([_call(20, service="search", user_hash=None), _call(21, service="chat")]),
    ]
    together = decoder.decode_all(values, NOW_MS)
    alone = [decoder.decode(value, NOW_MS) for value in values]
    assert [_summary(result) for result in together] == [_summary(result) for result in alone]
    assert sum(len(refused) for _calls, refused in together) >= 8  # the refusals were really exercised
    assert [calls.event_id.tolist() if calls is not None else None for calls, _ in together][:3] == [
        ["ev-0", "ev-2"], None, ["ev-4", "ev-5"]]


def test_a_run_of_records_decoded_together_reads_as_their_calls_in_order(encoder: BatchEncoder,
                                                                         decoder: CallDecoder) -> None:
    """The agent absorbs a run of adjacent records as one batch: decoded together, their calls are ranges of one
    set of columns, and the run is one range again rather than a copy. It must read exactly as the records' calls
    copied end to end, dictionary columns and their groups included."""
    services, models = ["chat", "search", "ocr"], ["m1", "m2"]
    values = [encoder.encode_batch([_call(10 * r + n, service=services[(r + n) % 3], request_model=models[n % 2],
                                          user_hash=None if n == 2 else f"u{r}") for n in range(3 + r)])
              for r in range(4)]
    parts = [calls for calls, _refused in decoder.decode_all(values, NOW_MS)]
    assert all(part is not None for part in parts)
    run = CallColumns.concat(parts)  # type: ignore[arg-type]
    copied = CallColumns.concat([part.take(np.arange(len(part))) for part in parts])  # type: ignore[union-attr]
    assert np.shares_memory(run.latency_ms, parts[0].latency_ms)  # one range of the columns decoded together
    assert _summary((run, [])) == _summary((copied, []))
    for names in (("service",), ("service", "model"), ("user_hash",)):
        assert _members(*run.group_by(*names)) == _members(*copied.group_by(*names)), names
    skipping = CallColumns.concat([parts[0], parts[2]])  # type: ignore[list-item]
    assert skipping.event_id.tolist() == parts[0].event_id.tolist() + parts[2].event_id.tolist()  # type: ignore[union-attr]
    assert _members(*skipping.group_by("service")) == _members(
        *CallColumns.concat([parts[0].take(np.arange(len(parts[0]))), parts[2]]).group_by("service"))  # type: ignore[union-attr]


def _json_call(i: int, **fields: Any) -> bytes:
    return json.dumps(_call(i, **fields)).encode()


def _summary(result: tuple[CallColumns | None, list[Any]]) -> tuple[Any, ...]:
    calls, refused = result
    columns = None if calls is None else {name: [repr(v) for v in getattr(calls, name)]
                                           for name in ("event_id", "service", "model", "latency_ms", "user_hash",
                                                        "confidence", "timestamp_ms")} | {"labels": calls.labels}
    return columns, [(r.code, r.reason, r.payload, r.batch_index) for r in refused]
