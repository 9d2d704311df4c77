"""ChangelogReader against the real broker: a changelog's partitions read past given offsets to their end, the
latest value per key (None for a tombstone) and the last offset read; what a partition at its end or past a
read's budget gives. The worker around it: tests/integration/test_worker.py (a restart reads 600k records) and
tests/reliability/ (restarts, takeovers, rebalances, a frozen worker)."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse.processors.state_recovery import ChangelogReader


def _changelog(bootstrap: str) -> str:
    topic = f"recovery-{uuid.uuid4().hex[:10]}-changelog"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1, config={"cleanup.policy": "compact"})])[topic].result(30)
    return topic


def _write(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_partitions_are_read_past_the_given_offsets_to_their_end_latest_value_per_key(kafka_bootstrap: str) -> None:
    topic = _changelog(kafka_bootstrap)
    _write(kafka_bootstrap, topic, [
        (0, b"0|a", b"1"), (0, b"0|b", b"1"), (0, b"0|a", b"2"), (0, b"0|b", None),  # offsets 0-3
        (1, b"1|c", b"1"), (1, b"1|c", b"2"),  # offsets 0-1
    ])
    reader = ChangelogReader({"bootstrap.servers": kafka_bootstrap})

    whole = reader.read(topic, {0: None, 1: -1, 2: None})  # partition 2 holds nothing
    assert whole == {0: ({b"0|a": b"2", b"0|b": None}, 3), 1: ({b"1|c": b"2"}, 1)}
    assert reader.left == 0

    _write(kafka_bootstrap, topic, [(0, b"0|b", b"3"), (1, b"1|d", b"1")])  # offsets 4 and 2
    assert reader.read(topic, {0: 3, 1: 1}) == {0: ({b"0|b": b"3"}, 4), 1: ({b"1|d": b"1"}, 2)}
    assert reader.read(topic, {0: 4, 1: 2}) == {}  # nothing past what was applied
    assert reader.read(topic, {0: 1}) == {0: ({b"0|a": b"2", b"0|b": b"3"}, 4)}


def test_a_read_out_of_budget_returns_what_it_read_for_faust_to_go_on_from(kafka_bootstrap: str) -> None:
    topic = _changelog(kafka_bootstrap)
    _write(kafka_bootstrap, topic, [(0, f"0|k{n}".encode(), b"v") for n in range(1000)])
    assert ChangelogReader({"bootstrap.servers": kafka_bootstrap}, budget_s=0.0).read(topic, {0: None}) == {}
