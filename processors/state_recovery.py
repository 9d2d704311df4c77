"""State tables recovered in bulk: a changelog partition that becomes active here is read through librdkafka, in a
thread, before faust's recovery starts; faust then finds it read and goes on from there.

faust's recovery reads a changelog one record at a time through asyncio (per record: a task for the fetch's
wait, a queue hand-off, a ``wait_for`` on the queue, debug strings formatted): ~10,000 records a second. It
reads what a partition's next owner needs (the whole changelog) and, at every rebalance, what each partition
kept by this worker was written since the last one (its own writes among them: faust's offsets do not move with
the writes of changelog_writer.py). At 10,000 series a changelog holds ~400k live keys, so a start or a takeover
took ~40 s, and a rebalance up to as long. librdkafka reads the same records in batches (``ChangelogReader``).

``BulkReadStore`` is faust's in-memory store with one change: when partitions are assigned, before faust's
recovery asks where each active partition's reading starts (``persisted_offset``), it reads them from where
faust would start (the offset faust reached for a partition it kept, the beginning for one new to it) to their
current end, applies the records as faust applies them (latest value per key, a tombstone deletes), and
answers with the last offset read. faust then reads only what arrived meanwhile. Standby partitions stay
faust's. A read has ``BULK_READ_BUDGET_S`` (it holds the rebalance: the group waits for it): what is left then,
faust reads as before. A read that fails is logged and dropped whole: faust recovers those partitions itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Set
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from faust.stores import memory
from faust.types import TP

from llmpulse.processors.topics import MAX_RECORD_BYTES

log = logging.getLogger("llmpulse.worker.recovery")

BULK_READ_BUDGET_S = 30.0  # at most this long in a rebalance (half faust's 60 s rebalance timeout)
CONSUME_BATCH = 10_000  # records a consume call returns at most
CONSUME_WAIT_S = 0.05  # ... or what it has after this long (a partial last batch waits out the whole time)
WATERMARK_TIMEOUT_S = 10.0


class ChangelogReader:
    """Reads partitions of a changelog topic from given offsets to their current end, the latest value per key."""

    def __init__(self, config: dict[str, Any], budget_s: float = BULK_READ_BUDGET_S,
                 consumer: Callable[[dict[str, Any]], Any] = Consumer) -> None:
        self._config = {
            **config,
            "group.id": "llmpulse-state-recovery",  # required; partitions are assigned, nothing is committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.message.max.bytes": MAX_RECORD_BYTES,
            "queued.max.messages.kbytes": 262_144,
        }
        self._budget_s = budget_s
        self._consumer = consumer
        self.left = 0  # offsets still to read by the read under way (0 between reads): ``/health/ready`` shows it

    def read(self, topic: str, after: Mapping[int, int | None]) -> dict[int, tuple[dict[bytes, bytes | None], int]]:
        """Blocking. ``after``: partition -> the last offset already applied (None or -1: nothing). Returns each
        partition read past it: (latest value per key, None for a deletion; the last offset read)."""
        consumer = self._consumer(self._config)
        try:
            ends, begins = {}, {}
            for partition, last in after.items():
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=WATERMARK_TIMEOUT_S)
                ends[partition], begins[partition] = high, max(low, -1 if last is None else last + 1)
            todo = {partition for partition in after if begins[partition] < ends[partition]}
            if not todo:
                return {}
            consumer.assign([TopicPartition(topic, partition, begins[partition]) for partition in todo])
            latest: dict[int, dict[bytes, bytes | None]] = {partition: {} for partition in todo}
            last_read = {partition: begins[partition] - 1 for partition in todo}
            deadline = time.monotonic() + self._budget_s
            while todo and time.monotonic() < deadline:
                self.left = sum(ends[p] - 1 - last_read[p] for p in todo)
                for message in consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S):
                    error = message.error()
                    partition = message.partition()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaException(error)
                        todo.discard(partition)
                        continue
                    offset = message.offset()
                    latest[partition][message.key()] = message.value()
                    last_read[partition] = offset
                    if offset >= ends[partition] - 1:
                        todo.discard(partition)
            return {partition: (latest[partition], last_read[partition]) for partition in latest
                    if last_read[partition] >= begins[partition]}
        finally:
            self.left = 0
            consumer.close()


class BulkReadStore(memory.Store):
    """faust's in-memory store whose newly active partitions are read in bulk first (module docstring)."""

    def __init__(self, *args: Any, reader: ChangelogReader, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader = reader
        self._read_to: dict[TP, int] = {}  # what this rebalance's bulk read reached, for ``persisted_offset``
        self._actives: set[TP] = set()  # this table's active changelog partitions before this rebalance

    async def on_rebalance(self, assigned: Set[TP], revoked: Set[TP], newly_assigned: Set[TP],
                           generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        self._read_to = {}
        topic = self.table.changelog_topic.get_topic_name()
        actives = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        reached = self.app.tables.recovery.active_offsets  # where faust got to on the partitions it kept
        after = {tp.partition: reached.get(tp) if tp in self._actives else None for tp in actives}
        self._actives = actives
        if not after:
            return
        # what faust's recovery does first: records its producer still holds (the fleet blob a hand-over just
        # wrote) reach the broker, so the read ends past them; read without them, an older blob would replace it
        await self.app.producer.flush()
        began = time.monotonic()
        try:
            reads = await asyncio.get_running_loop().run_in_executor(None, self._reader.read, topic, after)
        except KafkaException as exc:
            log.warning("%s: reading partitions %s in bulk failed (%s); faust reads them instead", topic,
                        sorted(after), exc)
            return
        records = 0
        for partition, (latest, last) in reads.items():
            self._apply(partition, latest)
            self._read_to[TP(topic, partition)] = last
            records += len(latest)
        if reads:
            log.info("%s: read partitions %s in bulk in %.1f s (%d keys)", topic, sorted(reads),
                     time.monotonic() - began, records)

    def _apply(self, partition: int, latest: dict[bytes, bytes | None]) -> None:
        """As faust's ``apply_changelog_batch``: a key's latest value, a tombstone deleting it."""
        data, key_partition = self.data, self._key_partition
        for key, value in latest.items():
            if value is None:
                data.pop(key, None)
                key_partition.pop(key, None)
            else:
                data[key] = value
                key_partition[key] = partition

    def persisted_offset(self, tp: TP) -> int | None:
        """The last offset this rebalance's bulk read applied (faust's recovery starts after it), else None."""
        return self._read_to.get(tp)


class BulkReadTable(faust.Table):  # type: ignore[misc]
    """A faust table on a ``BulkReadStore`` reading through ``reader``."""

    def __init__(self, app: faust.App, *, reader: ChangelogReader, **kwargs: Any) -> None:
        self._reader = reader
        super().__init__(app, **kwargs)

    def _new_store_by_url(self, url: Any) -> BulkReadStore:
        return BulkReadStore(url, self.app, self, table_name=self.name, key_type=self.key_type,
                             key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                             value_type=self.value_type, loop=self.loop, options=self.options, reader=self._reader)
