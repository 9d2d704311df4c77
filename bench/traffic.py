"""Kafka helpers for runs against a live worker: traffic at a fixed rate with fresh timestamps, topic watchers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from bench import dataset
from llmpulse.producers.batching import BatchEncoder, new_event_id

TICK_S = 0.1  # the SDK's linger: one flush of every service's pending calls per tick


class LiveTraffic(threading.Thread):
    """Produces ``rate`` calls/s from a pool of rows, re-stamped at send time, as the SDK batches them.

    ``reshape`` may rewrite each row before it is sent (e.g. to spread keys); ``sent_calls`` counts calls.
    """

    def __init__(self, bootstrap: str, topic: str, rate: float, pool: Sequence[dict[str, Any]],
                 reshape: Callable[[dict[str, Any], int], None] | None = None) -> None:
        super().__init__(name="bench-traffic", daemon=True)
        self.topic, self.rate, self.pool, self.reshape = topic, rate, pool, reshape
        self.producer = Producer(dataset.producer_config(bootstrap))
        self.encoder = BatchEncoder(producer_id="bench-live")
        self.stop_event = threading.Event()
        self.sent_calls = 0
        self.late_ticks = 0  # ticks the producer could not finish in time (the offered rate was not met)

    def run(self) -> None:
        cursor, due, per_tick = 0, time.monotonic(), self.rate * TICK_S
        owed = 0.0
        while not self.stop_event.is_set():
            owed += per_tick
            count, owed = int(owed), owed - int(owed)
            rows = [dict(self.pool[(cursor + i) % len(self.pool)]) for i in range(count)]
            cursor += count
            self._send(rows, cursor)
            due += TICK_S
            wait = due - time.monotonic()
            if wait > 0:
                self.stop_event.wait(wait)
            else:
                self.late_ticks += 1
        self.producer.flush(30)

    def _send(self, rows: list[dict[str, Any]], cursor: int) -> None:
        stamp = int(time.time() * 1000)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for i, row in enumerate(rows):
            row["timestamp_ms"], row["event_id"] = stamp, new_event_id()
            if self.reshape is not None:
                self.reshape(row, cursor + i)
            by_service.setdefault(row["service"], []).append(row)
        for service, group in by_service.items():
            for start in range(0, len(group), dataset.CALLS_PER_RECORD):
                chunk = group[start : start + dataset.CALLS_PER_RECORD]
                self.produce(service, self.encoder.encode_batch(chunk))
                self.sent_calls += len(chunk)
        self.producer.poll(0)

    def produce(self, key: str, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key=key.encode())
                return
            except BufferError:
                self.producer.poll(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(60)


class SummaryProgress:
    """A worker's progress read from its fleet summaries (``handle`` for a TopicWatcher on the fleet topic).

    Each summary is sent once its run of records is done and names the run's source partition and last offset,
    so it tells how many records it covers (topics start at offset 0); a repeat from a replay covers none."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int]] = []  # (send stamp ms, records covered)
        self._last: dict[int, int] = {}

    def handle(self, message: Any, _arrived: float) -> None:
        summary = json.loads(message.value())
        source, offset = summary.get("p"), summary.get("o", -1)
        if source is not None and offset > self._last.get(source, -1):
            self.runs.append((message.timestamp()[1], offset - self._last.get(source, -1)))
            self._last[source] = offset

    def records(self, since: int = 0) -> int:
        """Records covered by the summaries from index ``since`` on."""
        return sum(records for _, records in self.runs[since:])

    def span_s(self) -> float:
        stamps = [stamp for stamp, _ in self.runs]
        return (max(stamps) - min(stamps)) / 1000.0 if len(stamps) > 1 else 0.0


class TopicWatcher(threading.Thread):
    """Reads every partition of a topic from the start; ``handle(message, arrival_time)`` per record."""

    def __init__(self, bootstrap: str, topic: str, handle: Any) -> None:
        super().__init__(name=f"watch-{topic}", daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.topic, self.handle = topic, handle
        self.stop_event = threading.Event()
        partitions: list[int] = []
        deadline = time.monotonic() + 15
        while not partitions and time.monotonic() < deadline:  # a topic just created may not be in metadata yet
            meta = self.consumer.list_topics(topic, timeout=5).topics.get(topic)
            partitions = sorted(meta.partitions) if meta is not None and meta.error is None else []
            if not partitions:
                time.sleep(0.2)
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions in the broker's metadata")
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for message in self.consumer.consume(num_messages=100, timeout=0.05):
                    arrived = time.time()
                    if message.error() is None:
                        self.handle(message, arrived)
                    elif message.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(message.error())
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
