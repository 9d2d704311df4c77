"""EngineStore: the engine of each calls partition and the fleet engine, cached and backed by the tables.

Per-partition state lives in one raw-bytes table (changelog-backed, keys ``<partition>|<namespace>/<key>``);
the fleet stage's state (ledger, circuits, alert policy, incidents, cursor) is one blob under ``fleet`` in a
one-partition table. Engines are rebuilt from the recovered tables on first use and written back with
``persist`` (the timer, commands) or ``checkpoint`` (agents: at most every ``checkpoint_ms``); a revoked
partition's engine is dropped, so the next owner's writes are never shadowed here.

The calls engines' records go through a ``StateLog``: in the worker a librdkafka writer of the state table's
changelog (changelog_writer.py); without one, the table's own ``send_changelog``. The fleet blob, one record
per persist, always takes the table's.

Agents change and persist engines holding ``lock``; the web layer sees only ``EngineViews``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Protocol

from llmpulse.processors.core.engine import CURSOR_KEY, RUN_PLAN_KEY, PartitionEngine
from llmpulse.processors.core.fleet import FleetConfig, FleetEngine
from llmpulse.processors.core.keyed_state import SourceCursor

FLEET_KEY = b"fleet"
# Source topics whose partitions get engines of their own (each engine's state is stamped with its own topic's
# offsets, so two topics never share one): the calls topic, table keys ``<partition>|...``, and the OTLP topic,
# ``otlp:<partition>|...`` in the same table partition. A lane's fleet summaries name their source as
# ``LANE_SOURCES[lane] + partition``, so the fleet stage keeps each topic partition's applied offsets apart.
CALLS_LANE = ""
OTLP_LANE = "otlp"
LANE_SOURCES = {CALLS_LANE: 0, OTLP_LANE: 1 << 20}


def _prefix(lane: str, partition: int) -> str:
    return f"{partition}|" if lane == CALLS_LANE else f"{lane}:{partition}|"


class ChangelogTable(Protocol):
    """What the store needs of a faust table: its recovered data and a way to write its changelog."""

    @property
    def data(self) -> MutableMapping[Any, Any]: ...

    def send_changelog(self, partition: int | None, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> Any: ...


class StateLog(Protocol):
    """Where the calls engines' state records go: the changelog partition of each engine, in write order."""

    def write(self, partition: int, key: bytes, value: bytes | None) -> None: ...

    def write_awaited(self, partition: int, key: bytes, value: bytes) -> Awaitable[Any]: ...

    async def flush(self) -> int:
        """Wait until what was written is delivered; returns how many records are still not."""
        ...


class TableChangelog:
    """A ``StateLog`` through the faust table's own producer."""

    def __init__(self, table: ChangelogTable) -> None:
        self._table = table

    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        self._table.send_changelog(partition, key, value, "raw", "raw")

    def write_awaited(self, partition: int, key: bytes, value: bytes) -> Awaitable[Any]:
        return self._table.send_changelog(partition, key, value, "raw", "raw")

    async def flush(self) -> int:
        return 0  # faust flushes its producer itself before partitions are revoked and at shutdown


class EngineViews(Protocol):
    """Read-only access for views and gauges: nothing here builds, caches or persists an engine."""

    def engines(self) -> Mapping[int, PartitionEngine]: ...

    def all_engines(self) -> list[PartitionEngine]: ...

    def loaded_fleet(self) -> FleetEngine | None: ...

    def fleet_view(self) -> FleetEngine: ...


class EngineStore:
    def __init__(self, state: ChangelogTable, fleet_state: ChangelogTable,
                 new_engine: Callable[[int], PartitionEngine], fleet_config: FleetConfig,
                 checkpoint_ms: int = 0, state_log: StateLog | None = None, fleet_checkpoint_ms: int = 0,
                 ledger_checkpoint_ms: int = 0, may_write: Callable[[], bool] = lambda: True) -> None:
        self._state = state
        self._state_log = state_log or TableChangelog(state)
        self._fleet_state = fleet_state
        self._new_engine = new_engine
        self._fleet_config = fleet_config
        self._engines: dict[int, PartitionEngine] = {}  # calls partitions
        self._lanes: dict[tuple[str, int], PartitionEngine] = {}  # other source topics' partitions
        self._fleet: FleetEngine | None = None
        # Calls engines' state is written at most this often by the agents (``checkpoint``); the timer writes it
        # on every tick. Between writes it builds up in memory: a series touched by many runs is encoded and
        # sent once, and a crash replays from the last persisted cursor (every run cut as planned).
        self._checkpoint_ms = checkpoint_ms
        self._persisted_at: dict[tuple[str, int], int] = {}  # (lane, partition) -> when its state was last written
        # A calls partition's ledgers (budget buckets, savings days, the alert policy: records holding every key of
        # their period, ~0.6 MB for a budget bucket at 10,000 users), at most this often while records change them,
        # its cursor then no further (``PartitionEngine.drain_state``); the timer, commands and hand-overs write
        # them whenever they write the rest.
        self._ledger_checkpoint_ms = ledger_checkpoint_ms
        self._ledger_persisted_at: dict[tuple[str, int], int] = {}
        # The fleet blob likewise, at most every ``fleet_checkpoint_ms`` while summaries arrive: it holds every
        # member of every incident, ~2.5 MB for an informational incident of 10,000 series.
        self._fleet_checkpoint_ms = fleet_checkpoint_ms
        self._fleet_persisted_at: int | None = None  # None: not written since this worker took the fleet stage
        self._fleet_changed = False
        # Held by whoever changes and persists engine state (agents per group of records, the timer, commands):
        # a persist in the middle of a group would write a cursor past records whose output is not yet sent.
        self.lock = asyncio.Lock()
        # False while the worker may have lost its partitions without knowing it (session_fence.py): nothing is
        # written then, and what changed stays to be written (or dropped with the engine on the revoke)
        self._may_write = may_write
        self._starts: dict[tuple[str, int], int] = {}  # ``set_starts``
        self._fleet_start: int | None = None

    # ---- calls partitions ----------------------------------------------------------------------------
    def engine(self, partition: int, lane: str = CALLS_LANE) -> PartitionEngine:
        """The partition's engine, rebuilt from the recovered state table on first use."""
        engines, key = self._slot(partition, lane)
        engine = engines.get(key)
        if engine is None:
            engine = engines[key] = self._new_engine(partition)
            engine.lane, engine.source = lane, LANE_SOURCES[lane] + partition
            prefix = _prefix(lane, partition).encode()
            for key, blob in list(self._state.data.items()):
                if key.startswith(prefix) and blob is not None:
                    engine.restore(key[len(prefix):].decode(), blob)
            start = self._starts.get((lane, partition))
            if start is not None and engine.cursor.next_offset is None:
                engine.cursor = SourceCursor(start)
        return engine

    def set_starts(self, starts: Mapping[tuple[str, int], int], fleet: int | None = None) -> None:
        """Where each assigned partition without a persisted cursor begins (its log's first offset; ``fleet``: the
        fleet topic's): an engine built without a cursor starts from there, so a record faust fails to deliver
        right after a rebalance is a hole its cursor finds (the agent seeks back), not a call never counted. Set
        on every assignment; without it such an engine takes whatever offset comes first."""
        self._starts = dict(starts)
        self._fleet_start = fleet

    def _slot(self, partition: int, lane: str) -> tuple[dict[Any, PartitionEngine], Any]:
        """Where the partition's engine is kept: the calls engines by partition, other lanes' by (lane, partition)."""
        return (self._engines, partition) if lane == CALLS_LANE else (self._lanes, (lane, partition))

    def adopt(self, partitions: Iterable[int], lane: str = CALLS_LANE) -> None:
        """Build the engines of these (assigned) partitions, so quiet partitions also tick and answer."""
        for partition in partitions:
            self.engine(partition, lane)

    def checkpoint(self, engine: PartitionEngine, now_ms: int) -> bool:
        """Persist the engine's state if ``checkpoint_ms`` passed since its last write, or it was never written
        (a cursor must be on the broker early: before it, a new owner would resume from Kafka's commit)."""
        key = (engine.lane, engine.partition)
        last = self._persisted_at.get(key)
        if last is not None and now_ms - last < self._checkpoint_ms:
            return False
        ledger_at = self._ledger_persisted_at.get(key)
        self.persist(engine, now_ms, hold_ledgers=ledger_at is not None
                     and now_ms - ledger_at < self._ledger_checkpoint_ms)
        return True

    def persist(self, engine: PartitionEngine, now_ms: int, hold_ledgers: bool = False) -> None:
        """Write the engine's changed state to the table and its changelog (tombstones for deletions); the
        engine drains its cursor last, so a persisted cursor implies the state it covers is persisted.
        ``hold_ledgers``: its ledgers, and so its cursor, wait (``PartitionEngine.drain_state``). Nothing is written
        (or drained) while ``may_write`` says no."""
        if not self._may_write():
            return
        self._persisted_at[(engine.lane, engine.partition)] = now_ms
        if not hold_ledgers:
            self._ledger_persisted_at[(engine.lane, engine.partition)] = now_ms
        prefix = _prefix(engine.lane, engine.partition)
        for key, blob in engine.drain_state(hold_ledgers):
            table_key = f"{prefix}{key}".encode()
            if blob is None:
                self._state.data.pop(table_key, None)
            else:
                self._state.data[table_key] = blob
            self._state_log.write(engine.partition, table_key, blob)

    def persist_run_plan(self, engine: PartitionEngine) -> Awaitable[Any]:
        """Write where the engine's runs end; returns the delivery to await before any output of those runs is
        sent (a replay must cut the runs whose output reached the broker as they were cut)."""
        table_key = f"{_prefix(engine.lane, engine.partition)}{RUN_PLAN_KEY}".encode()
        blob = engine.run_plan.to_bytes()
        self._state.data[table_key] = blob
        return self._state_log.write_awaited(engine.partition, table_key, blob)

    async def flush(self) -> int:
        """Wait until every state record written so far is on the broker; returns how many are still not."""
        return await self._state_log.flush()

    async def hand_over(self, partitions: Iterable[tuple[str, int]], now_ms: int) -> int:
        """Revoked (lane, partition)s: write what their engines changed since the last checkpoint, wait until
        every state record written so far is on the broker, then drop the engines, so the next owner recovers
        all of it and replays nothing this worker absorbed. Returns how many records are still not delivered
        (the next owner then replays from the cursors it finds). Call it holding ``lock``."""
        moving = list(partitions)
        for lane, partition in moving:
            engines, key = self._slot(partition, lane)
            engine = engines.get(key)
            if engine is not None:
                self.persist(engine, now_ms)
        left = await self.flush()
        for lane, partition in moving:
            self.drop(partition, lane)
        return left

    def drop(self, partition: int, lane: str = CALLS_LANE) -> None:
        """Forget a revoked partition's engine (its state stays in the table for the next owner)."""
        self._persisted_at.pop((lane, partition), None)
        self._ledger_persisted_at.pop((lane, partition), None)
        engines, key = self._slot(partition, lane)
        engines.pop(key, None)

    def persisted_cursor(self, partition: int, lane: str = CALLS_LANE) -> int | None:
        """The next source offset to process on this partition of the lane's topic, as persisted with its state."""
        blob = self._state.data.get(f"{_prefix(lane, partition)}{CURSOR_KEY}".encode())
        return SourceCursor.from_bytes(blob).next_offset if blob else None

    def engines(self) -> Mapping[int, PartitionEngine]:
        """The calls partitions' engines built so far, by partition: a read-only snapshot, safe to iterate across
        awaits."""
        return MappingProxyType(dict(self._engines))

    def all_engines(self) -> list[PartitionEngine]:
        """Every engine built so far, the calls partitions' and the other lanes' (a snapshot)."""
        return [*self._engines.values(), *self._lanes.values()]

    def built(self, partition: int, lane: str = CALLS_LANE) -> PartitionEngine | None:
        """The partition's engine if it is built (``engine`` builds it); None after ``drop``."""
        engines, key = self._slot(partition, lane)
        return engines.get(key)

    def lane_engines(self, partition: int) -> list[PartitionEngine]:
        """The engines of other lanes already built for this partition number (no engine is built here)."""
        return [engine for (_lane, number), engine in list(self._lanes.items()) if number == partition]

    # ---- the fleet stage -----------------------------------------------------------------------------
    def fleet(self) -> FleetEngine:
        """The fleet engine, rebuilt from the fleet table on first use."""
        if self._fleet is None:
            self._fleet = self._restore_fleet()
        return self._fleet

    def loaded_fleet(self) -> FleetEngine | None:
        """The fleet engine if it is built (this worker applied summaries since it took the fleet partition)."""
        return self._fleet

    def fleet_view(self) -> FleetEngine:
        """The fleet engine, or one rebuilt from the table and not cached (a view must not pin state
        mid-recovery)."""
        return self._fleet if self._fleet is not None else self._restore_fleet()

    def checkpoint_fleet(self, now_ms: int) -> bool:
        """The fleet engine changed: write it if ``fleet_checkpoint_ms`` passed since its last write, or it was not
        written since this worker took the fleet stage (its cursor must be on the broker early)."""
        self._fleet_changed = True
        last = self._fleet_persisted_at
        if last is not None and now_ms - last < self._fleet_checkpoint_ms:
            return False
        self.persist_fleet(now_ms)
        return True

    def persist_fleet(self, now_ms: int) -> None:
        """Write the fleet engine now (its outputs are on the broker already: the blob says they were decided);
        nothing while ``may_write`` says no."""
        if self._fleet is not None and self._may_write():
            blob = self._fleet.to_bytes()
            self._fleet_state.data[FLEET_KEY] = blob
            self._fleet_state.send_changelog(0, FLEET_KEY, blob, "raw", "raw")
            self._fleet_persisted_at, self._fleet_changed = now_ms, False

    def persist_fleet_changes(self, now_ms: int) -> None:
        """Write the fleet engine if it changed since its last write (the timer; a hand-over)."""
        if self._fleet_changed:
            self.persist_fleet(now_ms)

    def hand_over_fleet(self, now_ms: int) -> None:
        """The fleet partition leaves this worker: write what changed since the last checkpoint, then forget the
        engine (the next owner rebuilds it from the table). Call it holding ``lock``."""
        self.persist_fleet_changes(now_ms)
        self.drop_fleet()

    def drop_fleet(self) -> None:
        self._fleet = None
        self._fleet_persisted_at, self._fleet_changed = None, False

    def persisted_fleet_cursor(self) -> int | None:
        """The next fleet-topic offset to apply, as persisted in the fleet blob."""
        blob = self._fleet_state.data.get(FLEET_KEY)
        return FleetEngine.cursor_of(blob) if blob else None

    def _restore_fleet(self) -> FleetEngine:
        blob = self._fleet_state.data.get(FLEET_KEY)
        if blob:
            return FleetEngine.from_bytes(blob, self._fleet_config)
        fleet = FleetEngine(self._fleet_config)
        if self._fleet_start is not None:
            fleet.cursor = SourceCursor(self._fleet_start)
        return fleet
