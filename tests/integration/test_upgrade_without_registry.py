"""An SDK newer than the worker, without a schema registry (docs/schemas.md, "Upgrades"): the SDK announces its
writer schemas on the schemas topic before its first record, and a real worker that was never told of that schema
reads its records; a record whose schema nobody announced is refused as ``unknown_schema`` and, once the schema is
announced, ``llmpulse dead-letter replay`` brings its calls in."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from llmpulse import schemas
from llmpulse.producers import Pulse
from llmpulse.schemas.writer_schemas import read_announcement
from tests.support.cli import run_cli
from tests.support.newer_sdk import newer_announcement, newer_batch
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(180)
PROCESSED = "llmpulse_events_processed_total"


def _processed(worker: WorkerProcess, at_least: float) -> bool:
    return bool(wait_until(lambda: worker.metric(PROCESSED) >= at_least, 30, step=0.3))


def test_a_newer_sdks_records_are_read_once_it_announces_its_schema(worker: WorkerProcess) -> None:
    producer = Producer({"bootstrap.servers": worker.bootstrap})
    announcement = newer_announcement()
    producer.produce(worker.topic("schemas"), announcement.value(), key=announcement.key())
    assert producer.flush(20) == 0  # as the SDK does: its schemas are on the broker before its first record
    producer.produce(worker.topic("calls"), newer_batch(30), key=b"newer")
    assert producer.flush(20) == 0
    assert _processed(worker, 30), worker.log_tail()
    assert worker.metric("llmpulse_dead_letter_total") == 0

    # never announced: refused, kept; announced later: replayed from the dead-letter topic
    producer.produce(worker.topic("calls"), newer_batch(20, column="prompt_cache_hits"), key=b"newer")
    assert producer.flush(20) == 0
    assert wait_until(lambda: worker.metric("llmpulse_dead_letter_total", reason="unknown_schema") == 1, 30)
    late = newer_announcement("prompt_cache_hits")
    producer.produce(worker.topic("schemas"), late.value(), key=late.key())
    assert producer.flush(20) == 0
    replayed = run_cli("dead-letter", "replay", env=worker.env)
    assert replayed.returncode == 0 and replayed.stdout.startswith("replayed 1 of 1"), replayed.stdout + replayed.stderr
    assert _processed(worker, 50), worker.log_tail()


def test_pulse_announces_the_schemas_it_writes_before_its_first_record(worker: WorkerProcess) -> None:
    with Pulse(service="announcer", bootstrap_servers=worker.bootstrap, topic=worker.topic("calls"),
               schemas_topic=worker.topic("schemas"), linger_ms=20) as pulse:
        pulse.record(provider="openai", request_model="gpt-4o", latency_ms=500.0, input_tokens=10, output_tokens=5)
        assert pulse.flush(20) == 0
    assert pulse.stats().schemas_announced == 3
    consumer = Consumer({"bootstrap.servers": worker.bootstrap, "group.id": "test-schemas-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(worker.topic("schemas"), 0, OFFSET_BEGINNING)])
    announced = [read_announcement(message.value()) for message in consumer.consume(10, timeout=10)]
    consumer.close()
    assert sorted(a.contract for a in announced) == sorted([schemas.LLM_CALL_BATCH, schemas.LLM_CALL, schemas.FEEDBACK])
    assert {a.contract: a.schema for a in announced}[schemas.LLM_CALL_BATCH] == schemas.raw(schemas.LLM_CALL_BATCH)
    assert _processed(worker, 1)
