"""The worker's state writer (processors/changelog_writer.py) against the real broker: what the state's
correctness relies on (records in write order per partition, an awaited write on the broker when it settles, a
refused record stopping every later one) is what a consumer of the changelog sees."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from llmpulse.connection import client_config
from llmpulse.processors.changelog_writer import ChangelogFailed, ChangelogWriter
from llmpulse.processors.topics import COMPACTION, MAX_RECORD_BYTES, changelog_topics
from tests.support.kafka import read_topic


def _writer(bootstrap: str, topic: str, failures: list[ChangelogFailed]) -> ChangelogWriter:
    return ChangelogWriter(client_config(bootstrap, log_name="test.changelog"), topic, failures.append)


def test_state_records_reach_the_changelog_in_write_order_tombstones_included(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("changelog", 2)
    failures: list[ChangelogFailed] = []
    writer = _writer(kafka_bootstrap, topic, failures)
    written = []
    for i in range(3_000):  # keys rewritten and deleted, as engines do: the last record of a key is its state
        partition, key = i % 2, f"series-{i % 7}".encode()
        value = None if i % 11 == 0 else f"blob-{i}".encode()
        writer.write(partition, key, value)
        written.append((partition, key, value))

    async def settle() -> int:
        return await writer.flush()

    assert asyncio.run(settle()) == 0
    assert writer.written == len(written)
    seen = read_topic(kafka_bootstrap, topic, lambda values: len(values) >= len(written), records=True)
    assert len(seen) == len(written)
    for partition in (0, 1):
        assert [r for r in seen if r[0] == partition] == [r for r in written if r[0] == partition]
    assert writer.close() == 0
    assert failures == []


def test_an_awaited_write_is_on_the_broker_once_it_settles(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("changelog", 2)
    writer = _writer(kafka_bootstrap, topic, [])
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}"})

    async def plan() -> None:
        writer.write(1, b"series", b"state")
        await writer.write_awaited(1, b"cursor/runs", b"plan")  # as the run plan, before its runs' output
        # on the broker now, and the plain write before it too (one partition, in order)
        _low, high = probe.get_watermark_offsets(TopicPartition(topic, 1), timeout=10)
        assert high == 2

    asyncio.run(plan())
    seen = read_topic(kafka_bootstrap, topic, lambda values: len(values) >= 2, timeout=10, records=True)
    assert seen == [(1, b"series", b"state"), (1, b"cursor/runs", b"plan")]
    probe.close()
    writer.close()


def test_a_record_the_broker_refuses_stops_every_later_write_and_the_worker(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    """A state blob over the topic's record limit (a changelog created without the worker's settings): later
    records of the partition, a cursor among them, must not land past it, and the worker must be told."""
    topic = topic_factory("changelog", 2, **{"max.message.bytes": "2000"})
    failures: list[ChangelogFailed] = []
    writer = _writer(kafka_bootstrap, topic, failures)

    async def write() -> None:
        await writer.write_awaited(0, b"before", b"fits")
        writer.write(0, b"big", os.urandom(10_000))  # over the limit however the writer compresses it
        writer.write(0, b"cursor", b"after the refused record")
        with pytest.raises(ChangelogFailed, match="too large"):
            await writer.flush(timeout_s=20)
        with pytest.raises(ChangelogFailed):
            writer.write(0, b"later", b"refused at once")
        with pytest.raises(ChangelogFailed):
            await writer.write_awaited(1, b"later", b"refused at once")

    asyncio.run(write())
    assert len(failures) == 1 and "too large" in str(failures[0])
    seen = read_topic(kafka_bootstrap, topic, lambda values: False, timeout=3, records=True)
    assert seen == [(0, b"before", b"fits")]
    writer.close(timeout_s=1)


def test_a_workers_state_changelogs_take_the_records_it_writes(worker, kafka_bootstrap: str) -> None:
    """faust creates the tables' changelogs; the worker asks for its record limit on them (a budget bucket holds
    every user's spend of its period: well over the broker's default 1 MB at ~40k users), and for compaction a
    restart reads little of (processors/topics.py)."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    names = changelog_topics(worker.app_id)
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name) for name in names])
    for resource, future in described.items():
        configs = future.result(30)
        assert configs["max.message.bytes"].value == str(MAX_RECORD_BYTES), resource.name
        assert {key: configs[key].value for key in COMPACTION} == COMPACTION, resource.name
