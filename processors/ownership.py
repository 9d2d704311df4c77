"""PartitionOwnership: which calls partitions and whether the fleet partition are ours, and where they resume.

The one place that talks to faust's consumer: assignment lookups, readiness after recovery, seeking a
partition back to its source cursor, and committing the persisted cursors on every assignment (through the
consumer's private ``_commit``: faust's public commit only commits acked offsets). docs/design.md,
"Exactly-once state under at-least-once delivery", explains why Kafka's own committed offset is not trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted

from llmpulse.processors.clock import now_ms
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.engine_store import CALLS_LANE, OTLP_LANE, EngineStore
from llmpulse.processors.wiring import FLEET_PARTITION

log = logging.getLogger("llmpulse.worker")


class PartitionOwnership:
    def __init__(self, app: faust.App, calls_topic: str, fleet_topic: str, store: EngineStore,
                 on_rewind: Callable[[str], None], otlp_topic: str | None = None,
                 in_doubt: Callable[[], bool] = lambda: False, bulk_left: Callable[[], int] = lambda: 0) -> None:
        self._app = app
        # True while a stall past the consumer session may have cost this worker its partitions unnoticed
        # (session_fence.py): it then owns none and is not ready, whatever faust's assignment still says
        self._in_doubt = in_doubt
        self._bulk_left = bulk_left  # changelog offsets the bulk read under way has left (state_recovery.py)
        self._calls = calls_topic
        # source topic -> its lane of engines (engine_store.py); the OTLP topic only when its ingest is on
        self._lanes = {calls_topic: CALLS_LANE, **({otlp_topic: OTLP_LANE} if otlp_topic else {})}
        self._topics = {lane: topic for topic, lane in self._lanes.items()}
        self._fleet = fleet_topic
        self._store = store
        self._on_rewind = on_rewind

    # ---- lookups -------------------------------------------------------------------------------------
    def owns(self, partition: int, lane: str = CALLS_LANE) -> bool:
        """Is this partition of the lane's topic (default: calls) assigned to us right now? Records buffered
        before a rebalance may still reach the agent afterwards; processing them would rebuild an engine from a
        table the new owner is writing, and persisting it would overwrite that owner's totals."""
        return self._assigned(self._topics[lane], partition) is not None and not self._in_doubt()

    def owns_fleet(self) -> bool:
        return self._assigned(self._fleet, FLEET_PARTITION) is not None and not self._in_doubt()

    def assigned_calls(self, lane: str = CALLS_LANE) -> list[int]:
        """The calls partitions (or another lane's topic partitions) assigned to us now."""
        topic = self._topics[lane]
        return [tp.partition for tp in self._app.consumer.assignment() if tp.topic == topic]

    def lanes(self) -> list[str]:
        """The lanes of engines this worker feeds: the calls topic's, and the OTLP topic's when it is read."""
        return list(self._topics)

    def assigned(self) -> set[tuple[str, int]]:
        """Every (topic, partition) assigned to us now."""
        return {(tp.topic, tp.partition) for tp in self._app.consumer.assignment()}

    def ready(self) -> bool:
        """Assigned partitions are recovered. faust sets ``recovery.completed`` once and never clears it, so a
        later rebalance's recovery is only visible as ``in_recovery``: an engine built from the table during it
        would miss state and then overwrite the changelog with short totals."""
        app = self._app
        recovery = app.tables.recovery
        return bool(
            app.consumer is not None and not app.rebalancing and not recovery.in_recovery
            and recovery.completed.is_set() and not self._in_doubt()
        )

    def recovery_left(self) -> int:
        """Changelog offsets still to read before the assigned partitions are recovered (faust's highwaters less
        what it read, and what the bulk read under way has left: state_recovery.py; compaction leaves gaps, so the
        records left are at most this): 0 once ready, and before a read has looked up where its partitions end
        (docs/operations.md, "What a start reads")."""
        if self.ready():
            return 0
        return self._bulk_left() + max(0, int(self._app.tables.recovery.active_remaining_total()))

    def _assigned(self, topic: str, partition: int) -> Any:
        """The consumer's TopicPartition for (topic, partition) if it is assigned to us now, else None."""
        return next((tp for tp in self._app.consumer.assignment() if tp.topic == topic and tp.partition == partition),
                    None)

    # ---- positions -----------------------------------------------------------------------------------
    async def rewind(self, partition: int, cursor: SourceCursor, lane: str = CALLS_LANE) -> None:
        """Seek a source partition back to its cursor: records between it and what arrived never reached us."""
        await self._rewind(self._topics[lane], partition, cursor)

    async def rewind_fleet(self, cursor: SourceCursor) -> None:
        await self._rewind(self._fleet, FLEET_PARTITION, cursor)

    async def _rewind(self, topic: str, partition: int, cursor: SourceCursor) -> None:
        offset = cursor.next_offset
        if offset is None:
            return
        log.warning("%s:%d: records from offset %d on never reached this worker; re-reading from there",
                    topic, partition, offset)
        self._on_rewind(topic)
        tp = self._assigned(topic, partition)
        if tp is not None:
            await self._app.consumer.seek_wait({tp: offset})

    def _persisted_cursor(self, topic: str, partition: int) -> int | None:
        if topic in self._lanes:
            return self._store.persisted_cursor(partition, self._lanes[topic])
        if topic == self._fleet:
            return self._store.persisted_fleet_cursor()
        return None

    # ---- rebalance hooks (connected by the Worker) --------------------------------------------------------
    async def on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        """Hand the revoked partitions over: their state as absorbed so far (checkpoints leave some unwritten)
        reaches the broker, then their engines are dropped, so the next owner recovers it and writes the tables
        from now on. faust sends this after the agents finished their events; the lock waits for a group still
        persisting."""
        moving = sorted((self._lanes[tp.topic], tp.partition) for tp in revoked if tp.topic in self._lanes)
        if self._in_doubt():
            log.warning("partitions revoked after this worker stood still past its consumer session: their state "
                        "is left as their new owner wrote it (this worker's unwritten changes are dropped)")
        await self._hand_over(moving)
        if any(tp.topic == self._fleet for tp in revoked):
            async with self._store.lock:  # what the fleet stage changed since its last checkpoint goes first
                self._store.hand_over_fleet(now_ms())

    async def hand_over_all(self) -> None:
        """At shutdown, once the agents finished their events and before the worker leaves the group: hand over
        every partition still assigned here as a rebalance would, so a restart replays nothing. Engines of
        partitions no longer assigned (this worker was expelled meanwhile) are not written."""
        try:
            assigned = self.assigned()
        except ConsumerNotStarted:  # stopped before it started: nothing was absorbed
            return
        await self._hand_over(sorted((engine.lane, engine.partition) for engine in self._store.all_engines()
                                     if (self._topics[engine.lane], engine.partition) in assigned))
        if (self._fleet, FLEET_PARTITION) in assigned:
            async with self._store.lock:
                self._store.persist_fleet_changes(now_ms())

    async def _hand_over(self, moving: list[tuple[str, int]]) -> None:
        async with self._store.lock:
            left = await self._store.hand_over(moving, now_ms())
        if left:
            log.warning("%d state records not yet delivered as partitions move; their next owner replays from "
                        "the cursors it finds", left)

    async def commit_persisted_cursors(self, sender: Any, **_: Any) -> None:
        """Once tables are recovered and before faust seeks to the committed offsets, commit each assigned
        partition's persisted cursor: Kafka's commit may run ahead of persisted state (keyed_state.py says
        why), and resuming from it would skip records for good. A cursor behind the commit replays a few
        records; one ahead of it saves replaying what is already absorbed."""
        offsets, unread = {}, []
        for tp in self._app.consumer.assignment():
            cursor = self._persisted_cursor(tp.topic, tp.partition)
            if cursor is not None:
                offsets[tp] = cursor
            elif tp.topic in self._lanes or tp.topic == self._fleet:
                unread.append(tp)  # never absorbed anywhere: every record from the log's start is due
        starts = await self._app.consumer.earliest_offsets(*unread) if unread else {}
        self._store.set_starts({(self._lanes[tp.topic], tp.partition): offset for tp, offset in starts.items()
                                if tp.topic in self._lanes and offset is not None},
                               fleet=next((offset for tp, offset in starts.items() if tp.topic == self._fleet), None))
        if offsets:
            log.info("resuming from persisted cursors: %s",
                     ", ".join(f"{tp.topic}:{tp.partition}@{offset}" for tp, offset in sorted(offsets.items())))
            # faust's public commit only commits acked offsets; this is the consumer's own commit call.
            await self._app.consumer._commit(offsets)
