"""Row -> columnar packing of LLM calls into one ``llm_call_batch`` record (and single-call encoding).

Why columnar: the processor turns each column straight into a numpy array, so the consumer pays no
per-call transposition, and a batch of 500 calls costs faust one record instead of 500 (see README).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llmpulse import schemas
from llmpulse.schemas.codec import SchemaCodec


def _field_layout() -> tuple[tuple[str, Any, bool], ...]:
    """(name, default, optional) for every llm_call field, read from the contract itself."""
    layout = []
    for spec in schemas.raw(schemas.LLM_CALL)["fields"]:
        optional = isinstance(spec["type"], list)
        layout.append((spec["name"], spec.get("default"), optional))
    return tuple(layout)


FIELDS = _field_layout()
REQUIRED_WITHOUT_DEFAULT = tuple(name for name, default, _ in FIELDS if default is None and not _)


def new_event_id() -> str:
    return os.urandom(16).hex()


class BatchEncoder:
    """Encodes calls as ``llm_call_batch`` (columnar) or one ``llm_call``; schemas parsed once."""

    def __init__(self, producer_id: str) -> None:
        self.producer_id = producer_id
        self.batch_codec = SchemaCodec(schemas.LLM_CALL_BATCH)
        self.call_codec = SchemaCodec(schemas.LLM_CALL)

    def columns(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        record: dict[str, Any] = {"producer_id": self.producer_id, "count": len(rows)}
        for name, default, optional in FIELDS:
            column = [row.get(name, default) for row in rows]
            if optional and all(value is None for value in column):
                column = None  # an all-null optional column costs one byte instead of one per call
            record[name] = column
        return record

    def encode_batch(self, rows: Sequence[dict[str, Any]]) -> bytes:
        return self.batch_codec.encode(self.columns(rows))

    def encode_call(self, row: dict[str, Any]) -> bytes:
        return self.call_codec.encode({name: row.get(name, default) for name, default, _ in FIELDS})
