"""Test helpers that talk to the real broker: read a topic, decode Avro records."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout: float = 30.0,
    decode: Callable[[bytes], Any] = lambda raw: raw,
    records: bool = False,
) -> list[Any]:
    """Decoded values of ``topic`` from the beginning, polling until ``until(values)`` or ``timeout``;
    ``records``: ``(partition, key, decoded value)`` each (a tombstone's value is None, not decoded)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    values: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:
            meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
            partitions = sorted(meta.partitions) if meta and meta.error is None else []
            if not partitions:
                time.sleep(0.2)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while time.monotonic() < deadline and not until(values):
            for message in consumer.consume(num_messages=500, timeout=0.3):
                if message.error() is None and records:
                    value = message.value()
                    values.append((message.partition(), message.key(), None if value is None else decode(value)))
                elif message.error() is None:
                    values.append(decode(message.value()))
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(message.error())
    finally:
        consumer.close()
    return values


def read_alert_records(bootstrap: str, topic: str, kind: str = "alert",
                       until: Callable[[list[dict[str, Any]]], bool] = lambda _v: False,
                       timeout: float = 30.0) -> list[dict[str, Any]]:
    """The records of one kind ("alert" or "incident") on an alerts topic, from the beginning."""
    from llmpulse.schemas.alerts_topic import AlertsTopicCodec

    codec = AlertsTopicCodec()
    values = read_topic(bootstrap, topic, until=lambda v: until([r for k, r in v if k == kind]), timeout=timeout,
                        decode=codec.decode)
    return [record for k, record in values if k == kind]
