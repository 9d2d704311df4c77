"""Packing LLM calls into one columnar ``llm_call_batch`` record (and single ``llm_call`` records).

Layout (see schemas/llm_call_batch.v1.avsc): numbers are packed little-endian buffers, repeated strings
(service, model, user, ...) are dictionary-encoded, unique ids are plain string arrays. A reader turns each
column into a numpy array with no per-call step; measured against a row-wise array of llm_call records
this decodes about 3x faster even before packing (see bench/batch_layout.py).

Stdlib only: the SDK must not pull numpy.
"""

from __future__ import annotations

import math
import os
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from llmpulse import schemas
from llmpulse.schemas.single_object import SchemaCodec

STATUS_SYMBOLS = ("ok", "error", "timeout", "rate_limited", "filtered", "denied")
_STATUS_CODES = {name: code for code, name in enumerate(STATUS_SYMBOLS)}
_NAN = math.nan

# column -> (array typecode, value used when the call has none)
PACKED: dict[str, tuple[str, Any]] = {
    "timestamp_ms": ("q", 0),
    "status": ("B", 0),
    "latency_ms": ("d", _NAN),
    "ttft_ms": ("d", _NAN),
    "input_tokens": ("i", 0),
    "output_tokens": ("i", 0),
    "cached_tokens": ("i", 0),
    "cost_micros": ("q", -1),
    "confidence": ("d", _NAN),
    "cache_hit": ("B", 0),
    "no_answer": ("B", 0),
    "prompt_chars": ("i", 0),
    "response_chars": ("i", 0),
    # Added in v2: a v1 writer's batch has none, and readers fill them with these values (ADDED_IN_V2).
    "reasoning_tokens": ("i", 0),
    "tool_calls": ("i", 0),
}
ADDED_IN_V2 = ("reasoning_tokens", "tool_calls")
DICTIONARY = (
    "service", "feature", "provider", "request_model", "response_model", "operation", "error_type",
    "user_hash", "session_id", "experiment_id", "variant", "prompt_version", "feature_version",
)
NULLABLE_STRINGS = ("trace_id", "span_id", "prompt_sha256", "prompt_text", "response_text")


def _field_layout() -> tuple[tuple[str, Any, bool], ...]:
    """(name, default, optional) for every llm_call field, read from the contract itself."""
    layout = []
    for spec in schemas.raw(schemas.LLM_CALL)["fields"]:
        layout.append((spec["name"], spec.get("default"), isinstance(spec["type"], list)))
    return tuple(layout)


FIELDS = _field_layout()
DEFAULTS = {name: default for name, default, _ in FIELDS}


def new_event_id() -> str:
    return os.urandom(16).hex()


def _packed(values: list[Any], typecode: str) -> bytes:
    packed = array(typecode, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _dictionary(values: list[str | None]) -> dict[str, Any]:
    index: dict[str | None, int] = {None: -1}
    codes = [index.setdefault(value, len(index) - 1) for value in values]
    return {"values": list(index)[1:], "codes": _packed(codes, "i")}


def _status_code(value: Any) -> int:
    return _STATUS_CODES[value]


class BatchEncoder:
    """Encodes calls as ``llm_call_batch`` (columnar) or one ``llm_call``; schemas parsed once.

    ``version`` pins the contract version written (the newest when None), e.g. to write what an older SDK
    wrote: the batch and the row contract move together, so version N writes both at vN. Columns the pinned
    version does not have are left out of the bytes."""

    def __init__(self, producer_id: str, version: int | None = None) -> None:
        self.producer_id = producer_id
        self.batch_codec = SchemaCodec(schemas.LLM_CALL_BATCH, version)
        self.call_codec = SchemaCodec(schemas.LLM_CALL, version)

    def columns(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The batch record for ``rows``; raises ValueError/TypeError/KeyError on a call that cannot fit."""
        record: dict[str, Any] = {"producer_id": self.producer_id, "count": len(rows)}
        for name, (typecode, missing) in PACKED.items():
            column = [row.get(name, missing) for row in rows]
            if name == "status":
                column = [_status_code(row.get("status") or "ok") for row in rows]
            elif missing is not None:
                column = [missing if value is None else value for value in column]
            record[name] = _packed(column, typecode)
        for name in DICTIONARY:
            record[name] = _dictionary([row.get(name, DEFAULTS[name]) for row in rows])
        record["event_id"] = [row["event_id"] for row in rows]
        for name in NULLABLE_STRINGS:
            column = [row.get(name) for row in rows]
            record[name] = column if any(value is not None for value in column) else None
        labels = [row.get("labels") or {} for row in rows]
        record["labels"] = labels if any(labels) else None
        return record

    def encode_batch(self, rows: Sequence[dict[str, Any]]) -> bytes:
        return self.batch_codec.encode(self.columns(rows))

    def encode_call(self, row: dict[str, Any]) -> bytes:
        return self.call_codec.encode({name: row.get(name, default) for name, default, _ in FIELDS})
