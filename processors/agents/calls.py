"""Agent: llm-calls records -> engine of each record's partition -> alerts, dead letters, metrics, state.

Records are taken up to ``TAKE_MAX_RECORDS`` at once (``take_events``) and processed in groups (``record_groups``)
of ``GROUP_RECORDS``, or more while they fit in ``GROUP_MAX_BYTES``: many small records (a few dozen calls each, as
at many series) make one group and share its fixed costs; large ones (hundreds of calls, in any wire format) make
groups of 64 as they always did, so no group holds the alerts it decides much longer than a group of large records
takes. A partition's records in a group are cut into runs that
its engine absorbs as one batch each (core/run_plan.py), the runs' ends persisted before any of their output
is sent. Then alerts, dead letters and fleet summaries are sent and their delivery awaited; at a checkpoint
(``state_checkpoint_s`` since the engine's last write; the timer writes every engine on each tick) the changed
state of the engine is written, its source cursor last. A crash anywhere replays from the persisted cursor
(ownership.py commits it on every assignment) and cuts the same runs, the plan holding every run's end since
that cursor: state objects skip what they already absorbed (offset stamps), the fleet stage skips summaries it
applied, and an alert decided again carries the same alert_id, so consumers see at most a repeat, never a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

from llmpulse.processors.clock import now_ms
from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.keyed_state import Admission
from llmpulse.processors.core.run_plan import Cut
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import CALLS_LANE, EngineStore
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.ownership import PartitionOwnership
from llmpulse.processors.wire.calls import Refused
from llmpulse.processors.wire.feedback import FeedbackDecoder

log = logging.getLogger("llmpulse.worker.calls")
TAKE_MAX_RECORDS = 192
TAKE_WITHIN_S = 0.05
GROUP_RECORDS = 64
GROUP_MAX_BYTES = 2 << 20  # ~11k Avro calls: 192 records of ~40 calls (~1.4 MB) are one group, 64 of ~470 are 5 MB


def record_groups(sizes: Sequence[int], records: int = GROUP_RECORDS, max_bytes: int = GROUP_MAX_BYTES) -> list[range]:
    """Taken records (their sizes in bytes, in order) cut into the groups processed together: consecutive, each of
    ``records`` records, or more while the group holds at most ``max_bytes``."""
    groups, start, held = [], 0, 0
    for i, size in enumerate(sizes):
        if i - start >= records and held + size > max_bytes:
            groups.append(range(start, i))
            start, held = i, 0
        held += size
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups


class RecordDecoder(Protocol):
    """Records' bytes -> calls and refused parts per record (wire/calls.py for the calls topic, wire/otlp.py for
    OTLP); the small records' calls are checked in one pass (wire/calls.py ``check_all``)."""

    def decode_all(self, values: Sequence[bytes], now_ms: int) -> list[tuple[CallColumns | None, list[Refused]]]: ...


class WriterSchemaLookup(Protocol):
    """Finds the writer schema of a record no codec knows (writer_schemas.py); blocking, so run off the loop."""

    def lookup(self, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Record:
    """One admitted record of a group: its calls decoded (a feedback record is kept raw)."""

    offset: int
    value: bytes | None
    calls: CallColumns | None = None
    refused: list[Refused] = field(default_factory=list)
    feedback: bool = False

    def times(self) -> tuple[int, int] | None:
        """Event time of its oldest and newest call."""
        if self.calls is None or not len(self.calls):
            return None
        return int(self.calls.timestamp_ms.min()), int(self.calls.timestamp_ms.max())


@dataclass(frozen=True, slots=True)
class CallsAgent:
    """One per source topic: the calls topic, and the OTLP topic (``lane``) when its ingest is on; each topic's
    partitions have engines and persisted cursors of their own."""

    store: EngineStore
    emitter: Emitter
    ownership: PartitionOwnership
    decoder: RecordDecoder
    exporter: MetricsExporter
    lane: str = CALLS_LANE
    feedback: FeedbackDecoder = field(default_factory=FeedbackDecoder)  # feedback shares the calls topic
    writer_schemas: WriterSchemaLookup | None = None  # announced schemas of SDKs newer than this worker

    def register(self, app: faust.App, topic: faust.TopicT) -> None:
        topic_name = topic.get_topic_name()

        @app.agent(topic, name=f"llmpulse.{self.lane or 'calls'}")
        async def process_calls(stream: faust.StreamT) -> None:
            async for events in stream.take_events(TAKE_MAX_RECORDS, within=TAKE_WITHIN_S):
                for group in record_groups([len(event.value or b"") for event in events]):
                    async with self.store.lock:  # no timer or command may persist an engine halfway through a group
                        await self.process_group(topic_name, events[group.start : group.stop])

    async def process_group(self, topic_name: str, events: Sequence[faust.EventT]) -> None:
        store, ownership, lane = self.store, self.ownership, self.lane
        admitted: dict[int, list[tuple[int, bytes | None]]] = {}  # partition -> its records, in offset order
        holes: set[int] = set()
        for event in events:
            message = event.message
            if not ownership.owns(message.partition, lane):
                continue  # revoked while buffered: the new owner reprocesses it from the committed offset
            engine = store.engine(message.partition, lane)
            admission = engine.cursor.admit(message.offset)
            if admission is Admission.REWIND:
                holes.add(message.partition)
            if admission is not Admission.PROCESS:
                continue
            engine.cursor.advance(message.offset)
            admitted.setdefault(message.partition, []).append((message.offset, event.value))
        now = now_ms()
        decoded = {partition: await self._read(records, now) for partition, records in admitted.items()}
        for partition in [partition for partition in decoded if not ownership.owns(partition, lane)]:
            # lost while its records were read (a revoke, or a stall past the consumer session: session_fence.py):
            # nothing of them is absorbed. A stall leaves the engine: its cursor goes back to the first (if the
            # partition is still ours, the next record reveals the hole and the agent seeks back). A revoke dropped
            # it, and none is built again here: its next owner reads from the persisted cursor, and one built now
            # would be found, stale, if the partition came back. No await from here to the run plan's write below.
            log.info("%s:%d: not ours while its records were read; they are left for the cursor's next reader",
                     topic_name, partition)
            engine = store.built(partition, lane)
            if engine is not None:
                engine.cursor.hold_back(admitted[partition][0][0])
            holes.add(partition)
            del decoded[partition]
        cuts = {partition: self._cut(store.engine(partition, lane), records, store.persisted_cursor(partition, lane))
                for partition, records in decoded.items()}
        plans = [store.persist_run_plan(store.engine(partition, lane))
                 for partition, cut in cuts.items() if cut.planned]
        for plan in plans:  # where a run ends is on the broker before any of its output
            await plan
        alerts: list[tuple[list[AlertEvent], int]] = []
        deliveries: list[Awaitable[Any]] = []
        for partition, cut in cuts.items():
            engine, records = store.engine(partition, lane), decoded[partition]
            for first, end in cut.runs:
                deliveries += await self._handle(engine, topic_name, partition, records[first:end], now, alerts)
            if cut.held_from is not None:
                engine.cursor.hold_back(records[cut.held_from].offset)
                holes.add(partition)
        for decided, partition in alerts:
            await self.emitter.send_alerts(decided, partition, wait=True)
        for delivery in deliveries:  # the cursor may only move past records whose output is on the broker
            await delivery
        for partition in admitted:
            if ownership.owns(partition, lane):
                store.checkpoint(store.engine(partition, lane), now)
        for partition in holes:
            if ownership.owns(partition, lane):
                await ownership.rewind(partition, store.engine(partition, lane).cursor, lane)

    async def _read(self, records: list[tuple[int, bytes | None]], now: int) -> list[_Record]:
        """A partition's records as the run cutter needs them: feedback stays raw (its run is its own), calls are
        decoded, the small records' calls checked in one pass."""
        feedback = [bool(value) and self.feedback.knows(value) for _, value in records]
        calls_at = [i for i, (_, value) in enumerate(records) if value and not feedback[i]]
        decoded = dict(zip(calls_at, self.decoder.decode_all([records[i][1] or b"" for i in calls_at], now),
                           strict=True))
        out = []
        for i, (offset, value) in enumerate(records):
            if feedback[i]:
                out.append(_Record(offset, value, feedback=True))
                continue
            calls, refused = await self._decoded(value, decoded.get(i), now)
            out.append(_Record(offset, value, calls=calls, refused=refused))
        return out

    @staticmethod
    def _cut(engine: PartitionEngine, records: list[_Record], persisted_cursor: int | None) -> Cut:
        """The partition's runs (run_plan.py): feedback and records without calls stand alone, a run spans a few
        seconds of event time at most. New ends join the plan, which keeps every end a replay from the persisted
        cursor would meet (state is written at checkpoints, not after every group)."""
        cut = engine.run_plan.cut([record.offset for record in records],
                                  [record.feedback or record.calls is None for record in records],
                                  [record.times() for record in records])
        engine.run_plan.extend(cut.planned, records[0].offset if persisted_cursor is None else persisted_cursor)
        return cut

    async def _handle(self, engine: PartitionEngine, topic_name: str, partition: int, run: list[_Record], now: int,
                      alerts: list[tuple[list[AlertEvent], int]]) -> list[Awaitable[Any]]:
        """Absorb a run's calls as one batch; returns the pending sends (dead letters, fleet summary) it caused."""
        if len(run) == 1 and run[0].feedback:
            return await self._handle_feedback(engine, topic_name, partition, run[0].offset, run[0].value or b"",
                                               alerts)
        sends: list[Awaitable[Any]] = []
        for record in run:
            sends += [await self.emitter.send_dead_letter(item, topic_name, partition, record.offset)
                      for item in record.refused]
        parts = [record.calls for record in run if record.calls is not None]
        if not parts:
            return sends
        calls, last = CallColumns.concat(parts), run[-1].offset
        try:
            outcome = engine.process(calls, last, now)
        except Exception as exc:  # a bug must cost its records (kept on the dead-letter topic), not the agent
            log.exception("processing %s:%d@%d-%d failed", topic_name, partition, run[0].offset, last)
            reason = f"processing failed: {type(exc).__name__}: {exc}"
            for record in run:
                sends.append(await self.emitter.send_dead_letter(
                    Refused("internal_error", reason, record.value or b""), topic_name, partition, record.offset))
            return sends
        self.exporter.record_batch(outcome.totals, outcome.accepted, records=len(run))
        self.exporter.record_guard(outcome.guard, calls)
        self.exporter.record_unpriced(outcome.unpriced_models)
        sends.append(await self.emitter.send_fleet_summary(outcome.fleet_summary))
        sends += await self.emitter.send_routes(outcome.routes)
        if outcome.alerts:
            alerts.append((outcome.alerts, partition))
        return sends

    async def _decoded(self, value: bytes | None, decoded: tuple[CallColumns | None, list[Refused]] | None,
                       now: int) -> tuple[CallColumns | None, list[Refused]]:
        """A record's decoding; an empty one refused, one of a schema announced since decoded again."""
        if not value or decoded is None:
            return None, [Refused("empty", "record has no value (tombstone or empty bytes)", b"")]
        calls, refused = decoded
        if calls is None and await self._learned_writer_schema(value, refused):
            return self.decoder.decode_all([value], now)[0]
        return calls, refused

    async def _learned_writer_schema(self, value: bytes, refused: list[Refused]) -> bool:
        """Whether a record refused only for its unknown schema can be read now: an SDK newer than this worker
        announced that schema (the lookup reads the schemas topic; true at most once per schema, so no loop)."""
        if self.writer_schemas is None or [item.code for item in refused] != ["unknown_schema"]:
            return False
        return await asyncio.get_running_loop().run_in_executor(None, self.writer_schemas.lookup, value)

    async def _handle_feedback(self, engine: PartitionEngine, topic_name: str, partition: int, offset: int,
                               value: bytes, alerts: list[tuple[list[AlertEvent], int]]) -> list[Awaitable[Any]]:
        """A feedback record (keyed like its calls, so their engine is this one): join, quality, experiments."""
        feedback, refused = self.feedback.decode(value)
        sends = [await self.emitter.send_dead_letter(item, topic_name, partition, offset) for item in refused]
        if feedback is None:
            return sends
        try:
            outcome = engine.process_feedback(feedback, offset, now_ms())
        except Exception as exc:
            log.exception("processing feedback %s:%d@%d failed", topic_name, partition, offset)
            sends.append(await self.emitter.send_dead_letter(
                Refused("internal_error", f"processing failed: {type(exc).__name__}: {exc}", value),
                topic_name, partition, offset))
            return sends
        sends.append(await self.emitter.send_fleet_summary(outcome.fleet_summary))
        sends += await self.emitter.send_routes(outcome.routes)
        if outcome.alerts:
            alerts.append((outcome.alerts, partition))
        return sends
