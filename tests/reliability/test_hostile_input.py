"""~106k events, thousands of them hostile, into one worker: every bad one is dead-lettered with its reason,
every good one is counted, the worker survives, and metric label cardinality stays capped."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings

from llmpulse import schemas
from llmpulse.schemas.single_object import SchemaCodec
from tests.support import hostile
from tests.support.hostile import Hostile

pytestmark = pytest.mark.timeout(240)
SERIES_CAP = 50
VALID_BATCHES, VALID_BATCH_SIZE, SERVICES = 190, 500, 500
REPEATS = 20  # each hand-written hostile record is sent this many times (fresh random bytes each time)
GENERATED = 2000


def _generated_examples(rng: random.Random, now_ms: int) -> list[Hostile]:
    """Hypothesis-chosen field values (derandomized, bounded), each judged by the oracle in hostile.py."""
    out: list[Hostile] = []

    @settings(max_examples=GENERATED, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(hostile.call_fields(now_ms))
    def collect(fields: dict[str, Any]) -> None:
        out.append(hostile.generated(rng, now_ms, fields))

    collect()
    return out


def _records(now_ms: int) -> list[Hostile]:
    rng = random.Random(11)
    services = [f"tenant-{i:03d}" for i in range(SERVICES)]
    # Each batch spans a window of 25 services (an application batch spans few), 500 services overall.
    records = [hostile.valid_batch(rng, now_ms, VALID_BATCH_SIZE, services[(25 * i) % SERVICES:][:25])
               for i in range(VALID_BATCHES)]
    for _ in range(REPEATS):
        records += hostile.undecodable(rng, now_ms) + hostile.inconsistent_batches(rng, now_ms)
        records += [hostile.bad_status_code(rng, now_ms), *hostile.one_bad_among_good(rng, now_ms)]
        records += hostile.bad_single_calls(rng, now_ms) + hostile.bad_single_calls(rng, now_ms)
    records += [hostile.oversized(rng, now_ms) for _ in range(3)]
    records += _generated_examples(rng, now_ms)
    rng.shuffle(records)
    return records


def _series(worker: Any, name: str) -> int:
    _, text = worker.get("/metrics")
    return sum(1 for line in text.splitlines() if line.startswith(name + "{"))


def test_hostile_records_are_dead_lettered_and_good_ones_counted(workers, topic_reader, waiter) -> None:
    started = time.monotonic()
    worker = workers(LLMPULSE_MAX_SERIES_PER_METRIC=str(SERIES_CAP))
    now_ms = int(time.time() * 1000)
    records = _records(now_ms)
    expected_dead = Counter()
    for record in records:
        if record.reason_code is not None:
            expected_dead[record.reason_code] += record.dead_letters
    valid_calls = sum(r.valid_calls for r in records)
    events = valid_calls + sum(expected_dead.values())
    kinds = Counter(r.kind for r in records)

    producer = Producer({"bootstrap.servers": worker.bootstrap, "message.max.bytes": 16 * 1024 * 1024,
                         "compression.type": "lz4"})
    topic = worker.topic("calls")
    for record in records:
        while True:
            try:
                producer.produce(topic, record.value, key=record.key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    produced_s = time.monotonic() - started

    processed = waiter(lambda: worker.metric("llmpulse_events_processed_total") >= valid_calls
                       and worker.metric("llmpulse_dead_letter_total") >= sum(expected_dead.values()),
                       timeout=150, step=1.0)
    counted = worker.metric("llmpulse_events_processed_total")
    codec = SchemaCodec(schemas.DEAD_LETTER)
    dead = [codec.decode(value) for _, _, value in topic_reader(worker.topic("dead_letter"))]
    got_dead = Counter(d["reason_code"] for d in dead)
    print(f"events={events} records={len(records)} valid_calls={valid_calls} dead={dict(got_dead)} "
          f"kinds={dict(kinds)} produce={produced_s:.0f}s wall={time.monotonic() - started:.0f}s")

    assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
    assert processed, f"counted {counted} of {valid_calls}; dead letters {dict(got_dead)}\n{worker.log_tail()}"
    assert counted == valid_calls
    assert got_dead == expected_dead
    assert all(d["reason"] for d in dead)
    assert worker.metric("llmpulse_dead_letter_total") == sum(expected_dead.values())
    assert _series(worker, "llmpulse_llm_requests_total") <= SERIES_CAP + 1
    assert worker.metric("llmpulse_metric_series_folded_total", metric="llmpulse_llm_requests_total") > 0
    assert worker.get("/health/ready")[0] == 200
