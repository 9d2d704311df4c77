"""Upgrades in either order without a registry: llm_call_batch / llm_call v2 (reasoning_tokens, tool_calls).

"Old" is simulated by pinning the codecs: ``BatchEncoder(version=1)`` writes what a v1 SDK wrote, and
``CallDecoder(version=1)`` reads with the v1 reader schemas and knows only the v1 fingerprints, as a worker
released before v2 does. (tests/integration/test_schema_registry.py runs both orders through a real registry.)
"""

from __future__ import annotations

import time
from typing import Any

import fastavro
import numpy as np
import pytest

from llmpulse import schemas
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder
from llmpulse.schemas.single_object import HEADER_LEN, SchemaCodec, fingerprint

NOW = int(time.time() * 1000)


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"e{i}", "timestamp_ms": NOW - 1000, "service": "chat", "provider": "openai",
             "request_model": "o3", "status": "ok", "latency_ms": 900.0 + i, "input_tokens": 100,
             "output_tokens": 50 + i, "reasoning_tokens": 40 + i, "tool_calls": i % 3} for i in range(n)]


def _decoder(version: int | None = None) -> CallDecoder:
    return CallDecoder(Limits(), 1 << 22, 10_000, version=version)


def _v2_fields_of_refused(payload: bytes) -> tuple[int, int]:
    """reasoning_tokens and tool_calls of a dead-letter payload (a single llm_call, any known version)."""
    record = SchemaCodec(schemas.LLM_CALL).decode(payload)
    return record["reasoning_tokens"], record["tool_calls"]


def test_v2_is_the_newest_batch_and_call_contract() -> None:
    assert SchemaCodec(schemas.LLM_CALL_BATCH).schema == fastavro.parse_schema(schemas.raw(schemas.LLM_CALL_BATCH, 2))
    for name in ("reasoning_tokens", "tool_calls"):
        assert any(f["name"] == name and f["default"] == 0 for f in schemas.raw(schemas.LLM_CALL, 2)["fields"])
        assert any(f["name"] == name and f["default"] == "" for f in schemas.raw(schemas.LLM_CALL_BATCH, 2)["fields"])


def test_new_worker_carries_the_v2_fields_through_to_dead_letter_payloads() -> None:
    rows = _rows(4)
    rows[2]["latency_ms"] = -5.0  # invalid: refused alone, re-encoded as one llm_call with every field
    calls, refused = _decoder().decode(BatchEncoder("new").encode_batch(rows), NOW)
    assert calls is not None and len(calls) == 3
    (bad,) = refused
    assert bad.code == "invalid_field" and _v2_fields_of_refused(bad.payload) == (42, 2)


def test_old_sdk_to_new_worker_reads_v1_batches_and_calls_with_the_new_fields_zero() -> None:
    old_sdk = BatchEncoder("old", version=1)
    rows = _rows(5)
    v1_batch = old_sdk.encode_batch(rows)
    assert v1_batch[2:HEADER_LEN] == SchemaCodec(schemas.LLM_CALL_BATCH, 1).fingerprint
    calls, refused = _decoder().decode(v1_batch, NOW)
    assert calls is not None and not refused
    assert calls.output_tokens.tolist() == [row["output_tokens"] for row in rows]
    rows[0]["latency_ms"] = float("nan")
    _, (bad,) = _decoder().decode(old_sdk.encode_batch(rows[:1]), NOW)
    assert _v2_fields_of_refused(bad.payload) == (0, 0)  # a v1 writer never had them
    single, refused = _decoder().decode(old_sdk.encode_call(rows[1]), NOW)
    assert single is not None and not refused and single.event_id.tolist() == ["e1"]


def test_new_sdk_to_old_worker_is_refused_explicitly_then_read_once_the_writer_schema_is_known() -> None:
    """Without a registry a worker released before v2 cannot know the v2 fingerprint: it refuses the record as
    ``unknown_schema`` with the bytes kept (dead-letter topic, replayable), never guesses and never drops.
    Given the writer schema (register_writer), the same worker reads v2 by Avro resolution."""
    old_worker = _decoder(version=1)
    rows = _rows(3)
    v2_batch = BatchEncoder("new").encode_batch(rows)
    calls, (refused,) = old_worker.decode(v2_batch, NOW)
    v2_print = fingerprint(fastavro.parse_schema(schemas.raw(schemas.LLM_CALL_BATCH, 2)))
    assert calls is None and refused.code == "unknown_schema" and refused.payload == v2_batch
    assert v2_print.hex() in refused.reason

    old_worker.batch_codec.register_writer(schemas.raw(schemas.LLM_CALL_BATCH, 2))
    calls, refused_now = old_worker.decode(v2_batch, NOW)
    assert calls is not None and not refused_now
    assert np.array_equal(calls.latency_ms, [row["latency_ms"] for row in rows])


@pytest.mark.parametrize(("sdk", "worker"), [(1, 1), (1, 2), (2, 2)])
def test_every_supported_pair_reads_batches_and_single_calls(sdk: int, worker: int) -> None:
    encoder, decoder, rows = BatchEncoder("sdk", version=sdk), _decoder(version=worker), _rows(3)
    for payload, count in ((encoder.encode_batch(rows), 3), (encoder.encode_call(rows[0]), 1)):
        calls, refused = decoder.decode(payload, NOW)
        assert calls is not None and len(calls) == count and not refused
