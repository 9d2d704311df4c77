"""What an SDK newer than this worker writes: llm_call_batch with one more field (a "v3" the worker was not
released with), single-object encoded, and its writer-schema announcement."""

from __future__ import annotations

import copy
import io
import time
import uuid
from typing import Any

import fastavro

from llmpulse import schemas
from llmpulse.producers.batching import BatchEncoder
from llmpulse.schemas.single_object import MAGIC, fingerprint
from llmpulse.schemas.writer_schemas import Announcement


def newer_batch_schema(column: str = "cache_read_tokens") -> dict[str, Any]:
    """The newest shipped llm_call_batch plus a ``column`` this worker has never heard of (each name makes
    another schema, with a fingerprint of its own)."""
    raw = copy.deepcopy(schemas.raw(schemas.LLM_CALL_BATCH))
    raw["fields"].append({"name": column, "type": ["null", "bytes"], "default": None, "doc": "added by a future SDK"})
    return raw


def newer_announcement(column: str = "cache_read_tokens") -> Announcement:
    return Announcement(schemas.LLM_CALL_BATCH, newer_batch_schema(column))


def newer_batch(count: int, service: str = "newer", column: str = "cache_read_tokens") -> bytes:
    """``count`` calls as the newer SDK encodes them."""
    now = int(time.time() * 1000)
    rows = [{"event_id": uuid.uuid4().hex, "timestamp_ms": now - 500, "service": service, "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 700.0 + i, "input_tokens": 100,
             "output_tokens": 40} for i in range(count)]
    record = {**BatchEncoder("newer-sdk").columns(rows), column: b"\x00" * (8 * count)}
    parsed = fastavro.parse_schema(newer_batch_schema(column))
    buffer = io.BytesIO()
    buffer.write(MAGIC + fingerprint(parsed))
    fastavro.schemaless_writer(buffer, parsed, record)
    return buffer.getvalue()
