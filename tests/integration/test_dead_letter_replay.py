"""``llmpulse dead-letter show|replay`` against a real worker: records an older worker refused as
``unknown_schema`` (as it writes them: schemas/dead_letter.v1.avsc) go back to their source partition once, and
this worker counts their calls; other reasons and truncated payloads stay where they are."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from llmpulse import schemas
from llmpulse.producers.batching import BatchEncoder
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.cli import run_cli
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(180)
CALLS = 25


def _refused(payload: bytes, code: str, source: str, truncated: bool = False) -> bytes:
    return SchemaCodec(schemas.DEAD_LETTER).encode({
        "payload": payload, "payload_truncated": truncated, "source_topic": source, "source_partition": 0,
        "source_offset": 7, "batch_index": None, "reason_code": code, "reason": f"refused by an older worker: {code}",
        "failed_at_ms": int(time.time() * 1000)})


def _calls(n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{"event_id": uuid.uuid4().hex, "timestamp_ms": now - 1000, "service": "replayed", "provider": "openai",
             "request_model": "o3", "status": "ok", "latency_ms": 800.0 + i, "input_tokens": 100,
             "output_tokens": 40, "reasoning_tokens": 30, "tool_calls": 1} for i in range(n)]


def test_refused_records_are_replayed_once_to_a_worker_that_reads_them(worker: WorkerProcess) -> None:
    calls = worker.topic("calls")
    batch = BatchEncoder("newer-sdk").encode_batch(_calls(CALLS))
    producer = Producer({"bootstrap.servers": worker.bootstrap})
    for value in (_refused(batch, "unknown_schema", calls), _refused(batch[:40], "unknown_schema", calls, True),
                  _refused(b"\x00garbage", "invalid_field", calls)):
        producer.produce(worker.topic("dead_letter"), value, key=b"refused")
    assert producer.flush(20) == 0
    processed_before = worker.metric("llmpulse_events_processed_total")

    shown = run_cli("dead-letter", "show", env=worker.env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["invalid_field: 1", "unknown_schema: 2"]

    dry = run_cli("dead-letter", "replay", "--dry-run", env=worker.env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == (f"would replay 1 of 2 record(s) refused as unknown_schema (1 to {calls}); "
                                  f"1 truncated, left on {worker.topic('dead_letter')}")

    replayed = run_cli("dead-letter", "replay", env=worker.env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("replayed 1 of 2 record(s) refused as unknown_schema")
    assert wait_until(lambda: worker.metric("llmpulse_events_processed_total") >= processed_before + CALLS, 30,
                      step=0.3)

    again = run_cli("dead-letter", "replay", env=worker.env)  # the position was committed with the payloads
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("replayed 0 of 0 record(s)")
    time.sleep(3)  # what a second send would have added by now
    assert worker.metric("llmpulse_events_processed_total") == processed_before + CALLS
