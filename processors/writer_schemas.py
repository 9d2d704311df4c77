"""Writer schemas that SDKs announce on the schemas topic, taught to the worker's codecs on demand.

Without a schema registry, a record names its writer schema only by fingerprint, and a worker older than the SDK
that wrote it does not know that fingerprint. SDKs announce their writer schemas on a compacted topic before their
first record (schemas/writer_schemas.py). The worker reads that topic once at start and, when it meets a fingerprint
no codec knows, reads it again up to its current end: an announcement delivered before the record is then found,
and the record is read by Avro schema resolution instead of being refused as ``unknown_schema``.

Hostile input cannot stall the worker: a lookup happens at most once per fingerprint per ``retry_s`` and at most
``max_lookups_per_minute`` times a minute; a record that finds nothing is refused as before (dead-letter topic,
``llmpulse dead-letter replay`` once its schema is known).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from llmpulse.config import KafkaSecurity
from llmpulse.connection import client_config
from llmpulse.schemas.single_object import HEADER_LEN, MAGIC, SchemaCodec, fingerprint
from llmpulse.schemas.writer_schemas import BadAnnouncement, read_announcement

log = logging.getLogger(__name__)


class WriterSchemaCatalog:
    """The announcements of one schemas topic; ``codecs`` maps each contract name to the codecs that read it."""

    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity,
                 codecs: Mapping[str, Sequence[SchemaCodec]], *, retry_s: float = 1.0,
                 max_lookups_per_minute: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self.codecs = codecs
        self.retry_s = retry_s
        self.max_lookups_per_minute = max_lookups_per_minute
        self.clock = clock
        self.learned = 0  # writer schemas taught to a codec
        self.ignored = 0  # records that were not a usable announcement
        self._config = {
            **client_config(bootstrap, security, "llmpulse.writer_schemas.librdkafka"),
            "group.id": "llmpulse-writer-schemas",  # required by the client; partitions are assigned, never committed
            "enable.auto.commit": False,
        }
        self._consumer: Consumer | None = None
        self._read_lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self._tried: dict[bytes, float] = {}  # fingerprint -> when it was last looked up
        self._lookups: deque[float] = deque()

    # ---- learning ---------------------------------------------------------------------------------------
    def learn(self, value: bytes | None) -> bool:
        """Teach the codecs of its contract one announced writer schema; True when it was new to them."""
        try:
            announcement = read_announcement(value)
        except BadAnnouncement as exc:
            self.ignored += 1
            log.warning("schemas topic %s: ignoring a record: %s", self.topic, exc)
            return False
        readers = self.codecs.get(announcement.contract, ())
        if not readers:
            self.ignored += 1  # a contract this worker does not read (a newer kind of record): nothing to teach
            return False
        expected = readers[0].raw.get("name")
        if announcement.schema.get("name") != expected:
            self.ignored += 1
            log.warning("schemas topic %s: a %s announcement names record %r, not %r", self.topic,
                        announcement.contract, announcement.schema.get("name"), expected)
            return False
        header = MAGIC + fingerprint(fastavro.parse_schema(announcement.schema))
        new = not all(codec.knows(header) for codec in readers)
        for codec in readers:
            codec.register_writer(announcement.schema)
        if new:
            self.learned += 1
            log.info("learned a newer %s writer schema (fingerprint %s) from %s", announcement.contract,
                     header[2:].hex(), self.topic)
        return new

    def read_to_end(self, timeout: float = 10.0) -> int:
        """Read every announcement not read yet, up to where the topic ends now; how many were new. Blocking
        (call it off the event loop); a topic that is missing or unreachable teaches nothing and is retried on the
        next call."""
        with self._read_lock:
            try:
                return self._read(timeout)
            except KafkaException as exc:
                log.warning("schemas topic %s unavailable: %s", self.topic, exc)
                return 0

    def _read(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        if self._consumer is None:
            consumer = Consumer(self._config)
            metadata = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                consumer.close()
                log.info("schemas topic %s not found: no writer schemas announced yet", self.topic)
                return 0
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)])
            self._consumer = consumer
        consumer = self._consumer
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout)[1] for tp in consumer.assignment()}
        learned = 0
        while time.monotonic() < deadline:
            positions = consumer.position(list(consumer.assignment()))
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
            for message in consumer.consume(num_messages=100, timeout=0.2):
                if message.error() is None:
                    learned += self.learn(message.value())
        return learned

    # ---- on an unknown fingerprint -----------------------------------------------------------------------
    def lookup(self, data: bytes, timeout: float = 2.0) -> bool:
        """For a record no codec could place: read the topic up to its end, unless this fingerprint was looked up
        within ``retry_s`` or the minute's lookups are spent. True when a codec knows the record's schema now."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            return False
        fingerprint_bytes, now = data[2:HEADER_LEN], self.clock()
        with self._lookup_lock:
            while self._lookups and now - self._lookups[0] >= 60.0:
                self._lookups.popleft()
            last = self._tried.get(fingerprint_bytes)
            if (last is not None and now - last < self.retry_s) or len(self._lookups) >= self.max_lookups_per_minute:
                return False
            if len(self._tried) >= 10_000:
                self._tried.clear()
            self._tried[fingerprint_bytes] = now
            self._lookups.append(now)
        self.read_to_end(timeout)
        return any(codec.knows(data) for readers in self.codecs.values() for codec in readers)

    def close(self) -> None:
        with self._read_lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def stats(self) -> dict[str, Any]:
        return {"topic": self.topic, "learned": self.learned, "ignored": self.ignored}
