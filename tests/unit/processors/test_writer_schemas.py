"""A worker learning an SDK's writer schema from its announcement (processors/writer_schemas.py): newer records
read by Avro resolution, unusable announcements ignored, and lookups bounded so hostile fingerprints cannot stall
the worker. The whole path over Kafka: tests/integration/test_upgrade_without_registry.py."""

from __future__ import annotations

import json
import time

from llmpulse import schemas
from llmpulse.config import KafkaSecurity
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.processors.writer_schemas import WriterSchemaCatalog
from llmpulse.schemas.writer_schemas import Announcement
from tests.support.clock import FakeClock
from tests.support.newer_sdk import newer_announcement, newer_batch, newer_batch_schema


class _Catalog(WriterSchemaCatalog):
    """The catalog with the topic replaced by a list of record values (each read once, in order)."""

    def __init__(self, decoder: CallDecoder, clock: FakeClock, topic: list[bytes]) -> None:
        super().__init__("127.0.0.1:1", "llm-schemas", KafkaSecurity(),
                         {schemas.LLM_CALL_BATCH: [decoder.batch_codec], schemas.LLM_CALL: [decoder.call_codec]},
                         clock=clock)
        self.topic_values, self.reads = topic, 0

    def read_to_end(self, timeout: float = 10.0) -> int:
        self.reads += 1
        learned = sum(self.learn(value) for value in self.topic_values)
        self.topic_values.clear()
        return learned


def _now_ms() -> int:
    return int(time.time() * 1000)  # newer_batch stamps its calls with the wall clock


def _decoder() -> CallDecoder:
    return CallDecoder(Limits(), 1 << 22, 10_000)


def test_a_newer_batch_is_refused_until_its_schema_is_announced_then_read() -> None:
    decoder, topic = _decoder(), []
    catalog = _Catalog(decoder, FakeClock(), topic)
    record = newer_batch(5)
    calls, (refused,) = decoder.decode(record, _now_ms())
    assert calls is None and refused.code == "unknown_schema"
    assert catalog.lookup(record) is False  # nothing announced yet

    topic.append(newer_announcement().value())
    catalog.clock.advance(catalog.retry_s)  # this fingerprint may be looked up again
    assert catalog.lookup(record) is True and catalog.learned == 1
    calls, refused_now = decoder.decode(record, _now_ms())
    assert calls is not None and not refused_now and len(calls) == 5


def test_unusable_announcements_teach_nothing() -> None:
    decoder = _decoder()
    wrong_record = Announcement(schemas.LLM_CALL_BATCH, schemas.raw(schemas.LLM_CALL))  # a call passed off as a batch
    unknown_contract = Announcement("llm_trace", newer_batch_schema())
    bad = [b"", b"{not json", json.dumps({"contract": "llm_call_batch"}).encode(),
           json.dumps({"contract": "llm_call_batch", "schema": {"type": "nonsense"}}).encode(),
           wrong_record.value(), unknown_contract.value()]
    catalog = _Catalog(decoder, FakeClock(), list(bad))
    assert catalog.read_to_end() == 0
    assert (catalog.learned, catalog.ignored) == (0, len(bad))
    assert decoder.decode(newer_batch(1), _now_ms())[0] is None


def test_lookups_are_bounded_per_fingerprint_and_per_minute() -> None:
    decoder, clock = _decoder(), FakeClock()
    catalog = _Catalog(decoder, clock, [])
    hostile = [newer_batch(1)[:2] + bytes([i]) * 8 + b"\x00" for i in range(30)]  # 30 made-up fingerprints
    for record in hostile:
        catalog.lookup(record)
    assert catalog.reads == catalog.max_lookups_per_minute
    catalog.lookup(hostile[0])
    assert catalog.reads == catalog.max_lookups_per_minute  # the same fingerprint again within retry_s: no read
    clock.advance(61)
    catalog.lookup(hostile[0])
    assert catalog.reads == catalog.max_lookups_per_minute + 1
    assert catalog.lookup(b"not single-object encoded") is False
    assert catalog.reads == catalog.max_lookups_per_minute + 1
