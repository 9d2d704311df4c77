"""Agent: llm-calls records -> engine of each record's partition -> alerts, dead letters, metrics, state.

Records are taken in small groups (``take_events``): every record is processed, then alerts, dead letters
and fleet summaries are sent and their delivery awaited, then the changed state of every touched engine is
written once for the group, its source cursor last, and only then does faust ack the records. A crash
anywhere replays from the persisted cursor (ownership.py commits it on every assignment): state objects skip
what they already absorbed (offset stamps) and an alert decided again carries the same alert_id, so consumers
see at most a repeat, never a loss.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import faust

from llmpulse.processors.clock import now_ms
from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.keyed_state import Admission
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import EngineStore
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.ownership import PartitionOwnership
from llmpulse.processors.wire.calls import CallDecoder, Refused

log = logging.getLogger("llmpulse.worker.calls")
TAKE_MAX_RECORDS = 64
TAKE_WITHIN_S = 0.05


@dataclass(frozen=True, slots=True)
class CallsAgent:
    store: EngineStore
    emitter: Emitter
    ownership: PartitionOwnership
    decoder: CallDecoder
    exporter: MetricsExporter

    def register(self, app: faust.App, topic: faust.TopicT) -> None:
        topic_name = topic.get_topic_name()

        @app.agent(topic, name="llmpulse.calls")
        async def process_calls(stream: faust.StreamT) -> None:
            async for events in stream.take_events(TAKE_MAX_RECORDS, within=TAKE_WITHIN_S):
                async with self.store.lock:  # no timer or command may persist an engine halfway through a group
                    await self.process_group(topic_name, events)

    async def process_group(self, topic_name: str, events: Sequence[faust.EventT]) -> None:
        store, ownership = self.store, self.ownership
        touched: set[int] = set()
        alerts: list[tuple[list[AlertEvent], int]] = []
        deliveries: list[Awaitable[Any]] = []
        holes: set[int] = set()
        for event in events:
            message = event.message
            if not ownership.owns(message.partition):
                continue  # revoked while buffered: the new owner reprocesses it from the committed offset
            engine = store.engine(message.partition)
            admission = engine.cursor.admit(message.offset)
            if admission is Admission.REWIND:
                holes.add(message.partition)
            if admission is not Admission.PROCESS:
                continue
            deliveries += await self._handle(engine, topic_name, message.partition, message.offset, event.value,
                                             alerts)
            engine.cursor.advance(message.offset)
            touched.add(message.partition)
        for decided, partition in alerts:
            await self.emitter.send_alerts(decided, partition, wait=True)
        for delivery in deliveries:  # the cursor may only move past records whose output is on the broker
            await delivery
        for partition in touched:
            if ownership.owns(partition):
                store.persist(store.engine(partition))
        for partition in holes:
            if ownership.owns(partition):
                await ownership.rewind(partition, store.engine(partition).cursor)

    async def _handle(self, engine: PartitionEngine, topic_name: str, partition: int, offset: int,
                      value: bytes | None, alerts: list[tuple[list[AlertEvent], int]]) -> list[Awaitable[Any]]:
        """Decode and absorb one record; returns the pending sends (dead letters, fleet summary) it caused."""
        if not value:
            refused = [Refused("empty", "record has no value (tombstone or empty bytes)", b"")]
            calls = None
        else:
            calls, refused = self.decoder.decode(value, now_ms())
        sends = [await self.emitter.send_dead_letter(item, topic_name, partition, offset) for item in refused]
        if calls is None:
            return sends
        try:
            outcome = engine.process(calls, offset, now_ms())
        except Exception as exc:  # a bug must cost one record (kept on the dead-letter topic), not the agent
            log.exception("processing %s:%d@%d failed", topic_name, partition, offset)
            reason = f"processing failed: {type(exc).__name__}: {exc}"
            sends.append(await self.emitter.send_dead_letter(Refused("internal_error", reason, value or b""),
                                                             topic_name, partition, offset))
            return sends
        self.exporter.record_batch(outcome.totals, outcome.accepted)
        self.exporter.record_guard(outcome.guard, calls)
        self.exporter.record_unpriced(outcome.unpriced_models)
        sends.append(await self.emitter.send_fleet_summary(outcome.fleet_summary))
        if outcome.alerts:
            alerts.append((outcome.alerts, partition))
        return sends
