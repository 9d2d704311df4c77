"""EngineStore against dict-backed tables: restore on first use, persist with tombstones and the cursor last,
drop on revoke, read-only views that cache nothing."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from llmpulse.processors.core.engine import CURSOR_KEY, EngineConfig, PartitionEngine
from llmpulse.processors.core.fleet import FleetConfig, FleetEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.engine_store import FLEET_KEY, EngineStore
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.ownership import PartitionOwnership
from tests.support.calls import decoded

NOW = int(time.time() * 1000)


class FakeTable:
    """A faust table's ``data`` and ``send_changelog``, recorded."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[int | None, bytes, bytes | None, Any, Any]] = []

    def send_changelog(self, partition: int | None, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> None:
        self.changelog.append((partition, key, value, key_serializer, value_serializer))


class ScriptedEngine:
    """Stands in for a PartitionEngine: drains what the test scripts, records what it is restored from."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.drained: list[tuple[str, bytes | None]] = []
        self.restored: dict[str, bytes] = {}
        self.held_ledgers = False  # whether the last drain was asked to hold the ledgers

    def drain_state(self, hold_ledgers: bool = False) -> list[tuple[str, bytes | None]]:
        self.held_ledgers = hold_ledgers
        drained, self.drained = self.drained, []
        return drained

    def restore(self, key: str, blob: bytes) -> None:
        self.restored[key] = blob


def _scripted_store(state: FakeTable | None = None, fleet: FakeTable | None = None) -> EngineStore:
    return EngineStore(state or FakeTable(), fleet or FakeTable(), ScriptedEngine,  # type: ignore[arg-type]
                       FleetConfig())


@pytest.fixture(scope="module")
def new_engine():  # type: ignore[no-untyped-def]
    pricer, guard = Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model())
    return lambda partition: PartitionEngine(partition, EngineConfig(), pricer, guard)


def _calls(n: int):  # type: ignore[no-untyped-def]
    rows = [{"event_id": f"e-{i}", "timestamp_ms": NOW - 1000, "service": "checkout", "provider": "openai",
             "request_model": "gpt-4o", "status": "ok", "latency_ms": 400.0, "input_tokens": 200,
             "output_tokens": 100, "user_hash": f"user-{i % 3}", "cost_micros": 1000} for i in range(n)]
    return decoded(rows, NOW)


def test_a_persisted_engine_is_restored_by_the_next_store(new_engine) -> None:  # type: ignore[no-untyped-def]
    state = FakeTable()
    store = EngineStore(state, FakeTable(), new_engine, FleetConfig())
    engine = store.engine(3)
    engine.process(_calls(30), offset=9, now_ms=NOW)
    engine.cursor.advance(9)
    store.persist(engine, 0)

    assert store.persisted_cursor(3) == 10 and store.persisted_cursor(4) is None
    later = EngineStore(state, FakeTable(), new_engine, FleetConfig())  # e.g. the next owner, after recovery
    restored = later.engine(3)
    assert restored.cursor.next_offset == 10
    assert restored.budget.snapshot() == engine.budget.snapshot()
    assert later.engine(3) is restored  # cached: rebuilt once


def test_agents_write_an_engine_at_checkpoints_and_a_new_or_retaken_engine_at_once() -> None:
    state = FakeTable()
    store = EngineStore(state, FakeTable(), ScriptedEngine, FleetConfig(), checkpoint_ms=5_000)  # type: ignore[arg-type]

    def changed(at: int) -> bool:
        engine = store.engine(1)
        engine.drained = [(CURSOR_KEY, str(at).encode())]  # type: ignore[attr-defined]
        return store.checkpoint(engine, at)

    assert changed(1_000), "never written: its cursor goes to the broker at once"
    assert not changed(3_000) and not changed(5_999)
    assert state.data[b"1|cursor/next"] == b"1000", "state between checkpoints stays in memory"
    assert changed(6_000)
    store.persist(store.engine(1), 9_000)  # the timer's write also starts the interval again
    assert not changed(10_000)
    store.drop(1)
    assert changed(10_500), "an engine taken again is written at once"


def test_agents_hold_a_partitions_ledgers_for_their_checkpoint_interval_and_the_timer_writes_them() -> None:
    store = EngineStore(FakeTable(), FakeTable(), ScriptedEngine, FleetConfig(),  # type: ignore[arg-type]
                        ledger_checkpoint_ms=1_000)

    def held(at: int) -> bool:
        engine = store.engine(1)
        store.checkpoint(engine, at)
        return engine.held_ledgers  # type: ignore[attr-defined,no-any-return]

    assert not held(0), "never written: written whole at once"
    assert held(400) and held(999)
    assert not held(1_000)
    store.persist(store.engine(1), 1_500)  # the timer's write holds nothing and starts the interval again
    assert not store.engine(1).held_ledgers  # type: ignore[attr-defined]
    assert held(2_400)
    store.drop(1)
    assert not held(2_500), "an engine taken again is written whole at once"


def test_persist_writes_the_partition_changelog_raw_with_tombstones_and_the_cursor_last() -> None:
    state = FakeTable()
    state.data[b"2|attempts/gone"] = b"old"
    store = _scripted_store(state)
    engine = store.engine(2)
    engine.drained = [("attempts/kept", b"new"), ("attempts/gone", None), (CURSOR_KEY, b"cursor")]  # type: ignore[attr-defined]
    store.persist(engine, 0)

    assert state.data == {b"2|attempts/kept": b"new", b"2|cursor/next": b"cursor"}
    assert state.changelog == [
        (2, b"2|attempts/kept", b"new", "raw", "raw"),
        (2, b"2|attempts/gone", None, "raw", "raw"),
        (2, b"2|cursor/next", b"cursor", "raw", "raw"),
    ]


class RecordingStateLog:
    """A ``StateLog`` that records writes and flushes, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.events.append(("write", partition, key, value))

    def write_awaited(self, partition: int, key: bytes, value: bytes) -> Any:
        self.events.append(("awaited", partition, key, value))
        return asyncio.sleep(0)

    async def flush(self) -> int:
        self.events.append(("flush",))
        return 0


def test_with_a_state_log_the_engines_records_go_there_and_the_fleet_blob_to_its_table(new_engine) -> None:  # type: ignore[no-untyped-def]
    state, fleet, log = FakeTable(), FakeTable(), RecordingStateLog()
    store = EngineStore(state, fleet, new_engine, FleetConfig(), state_log=log)
    engine = store.engine(1)
    engine.cursor.advance(41)  # as the calls agent does for each record it admits
    engine.process(_calls(5), 41, NOW)
    asyncio.run(store.persist_run_plan(engine))  # type: ignore[arg-type]  # the recording log's coroutine
    store.persist(engine, NOW)
    store.fleet()
    store.persist_fleet(NOW)

    kinds = [event[0] for event in log.events]
    assert kinds[0] == "awaited" and log.events[0][2] == b"1|cursor/runs"
    assert set(kinds[1:]) == {"write"} and all(event[1] == 1 for event in log.events)
    assert log.events[-1][2] == b"1|cursor/next"  # the cursor after the state it covers
    assert state.changelog == []  # nothing through the table's own producer
    assert state.data[b"1|cursor/next"] == log.events[-1][3]  # the table still holds what was written
    assert [key for _, key, *_ in fleet.changelog] == [FLEET_KEY]


def test_a_revoked_partition_hands_over_what_it_absorbed_since_its_last_checkpoint(new_engine) -> None:  # type: ignore[no-untyped-def]
    log = RecordingStateLog()
    store = EngineStore(FakeTable(), FakeTable(), new_engine, FleetConfig(), checkpoint_ms=60_000, state_log=log)
    engine = store.engine(0)
    engine.cursor.advance(41)
    engine.process(_calls(5), 41, NOW)
    assert store.checkpoint(engine, NOW)  # the first write is never put off
    engine.cursor.advance(42)
    engine.process(_calls(5), 42, NOW + 1)
    assert not store.checkpoint(engine, NOW + 1)  # within the checkpoint interval: held in memory
    written_before = len(log.events)
    dropped: list[Any] = []
    drop = store.drop
    store.drop = lambda partition, lane="": (dropped.append((partition, list(log.events))), drop(partition, lane))  # type: ignore[method-assign]
    ownership = PartitionOwnership(None, "calls", "fleet", store, on_rewind=lambda _topic: None)  # type: ignore[arg-type]

    asyncio.run(ownership.on_revoked(None, {TP("calls", 0)}))

    assert len(dropped) == 1 and dropped[0][0] == 0
    handed = dropped[0][1][written_before:]
    assert handed[-1] == ("flush",)  # delivered before the engine goes
    assert handed[-2][2] == b"0|cursor/next"  # the cursor last, past the record absorbed since the checkpoint
    assert SourceCursor.from_bytes(handed[-2][3]).next_offset == 43
    assert {event[2].split(b"/")[0] for event in handed[:-2]} >= {b"0|latency", b"0|traffic"}
    assert 0 not in store.engines()


def test_in_doubt_a_worker_owns_nothing_writes_nothing_and_a_revoke_drops_its_changes(new_engine) -> None:  # type: ignore[no-untyped-def]
    doubt = [False]
    log = RecordingStateLog()
    store = EngineStore(FakeTable(), FakeTable(), new_engine, FleetConfig(), state_log=log,
                        may_write=lambda: not doubt[0])
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: {TP("calls", 0), TP("fleet", 0)}),
                          rebalancing=False,
                          tables=SimpleNamespace(recovery=SimpleNamespace(
                              in_recovery=False, completed=SimpleNamespace(is_set=lambda: True))))
    ownership = PartitionOwnership(app, "calls", "fleet", store, on_rewind=lambda _topic: None,  # type: ignore[arg-type]
                                   in_doubt=lambda: doubt[0])
    engine = store.engine(0)
    engine.cursor.advance(29)
    engine.process(_calls(5), 29, NOW)
    store.persist(engine, NOW)
    assert store.persisted_cursor(0) == 30
    assert ownership.owns(0) and ownership.owns_fleet() and ownership.ready()

    engine.cursor.advance(30)  # absorbed just before the process stood still
    engine.process(_calls(5), 30, NOW + 1)
    doubt[0] = True
    written = len(log.events)
    assert not ownership.owns(0) and not ownership.owns_fleet() and not ownership.ready()
    store.persist(engine, NOW + 2)  # the timer, woken: nothing written
    fleet = store.fleet()
    fleet.cursor.advance(7)
    store.persist_fleet(NOW + 2)
    assert len(log.events) == written and store.persisted_cursor(0) == 30 and store.persisted_fleet_cursor() is None

    doubt[0] = False  # a false alarm: what changed meanwhile is still written, cursor last
    store.persist(engine, NOW + 3)
    assert store.persisted_cursor(0) == 31
    assert log.events[-1][2] == b"0|cursor/next" and SourceCursor.from_bytes(log.events[-1][3]).next_offset == 31

    engine.cursor.advance(31)
    engine.process(_calls(5), 31, NOW + 4)
    doubt[0] = True  # this time the group did give the partition away: the revoke writes nothing
    written = len(log.events)
    asyncio.run(ownership.on_revoked(None, {TP("calls", 0)}))
    assert [event for event in log.events[written:] if event != ("flush",)] == []
    assert 0 not in store.engines() and store.persisted_cursor(0) == 31


def test_the_fleet_blob_is_written_at_checkpoints_by_the_timer_and_when_handed_over() -> None:
    fleet_table = FakeTable()
    store = EngineStore(FakeTable(), fleet_table, ScriptedEngine, FleetConfig(),  # type: ignore[arg-type]
                        fleet_checkpoint_ms=1_000)
    fleet = store.fleet()
    fleet.cursor.advance(10)
    assert store.checkpoint_fleet(NOW)  # the first write since taking the fleet stage is never put off
    fleet.cursor.advance(11)
    assert not store.checkpoint_fleet(NOW + 500)  # within the interval: held in memory
    assert store.persisted_fleet_cursor() == 11
    store.persist_fleet_changes(NOW + 600)  # the timer writes what changed
    assert store.persisted_fleet_cursor() == 12 and len(fleet_table.changelog) == 2
    store.persist_fleet_changes(NOW + 700)  # nothing changed since: nothing written
    assert len(fleet_table.changelog) == 2
    fleet.cursor.advance(12)
    assert not store.checkpoint_fleet(NOW + 800)
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: {TP("fleet", 0)}))
    ownership = PartitionOwnership(app, "calls", "fleet", store, on_rewind=lambda _topic: None)  # type: ignore[arg-type]

    asyncio.run(ownership.on_revoked(None, {TP("fleet", 0)}))

    assert store.persisted_fleet_cursor() == 13 and store.loaded_fleet() is None  # written, then forgotten
    assert store.fleet().cursor.next_offset == 13  # the next owner (here, this worker again) resumes there
    assert store.checkpoint_fleet(NOW + 900)  # taken again: written at once


def test_at_shutdown_the_fleet_stage_writes_what_changed_since_its_checkpoint() -> None:
    store = EngineStore(FakeTable(), FakeTable(), ScriptedEngine, FleetConfig(),  # type: ignore[arg-type]
                        fleet_checkpoint_ms=60_000)
    fleet = store.fleet()
    fleet.cursor.advance(4)
    assert store.checkpoint_fleet(NOW)
    fleet.cursor.advance(5)
    assert not store.checkpoint_fleet(NOW + 1)
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: {TP("fleet", 0)}))

    asyncio.run(PartitionOwnership(app, "calls", "fleet", store, on_rewind=lambda _t: None).hand_over_all())  # type: ignore[arg-type]

    assert store.persisted_fleet_cursor() == 6


def test_at_shutdown_the_partitions_still_assigned_are_handed_over_and_no_other(new_engine) -> None:  # type: ignore[no-untyped-def]
    log = RecordingStateLog()
    store = EngineStore(FakeTable(), FakeTable(), new_engine, FleetConfig(), checkpoint_ms=60_000, state_log=log)
    for partition in (0, 1):
        engine = store.engine(partition)
        engine.cursor.advance(7)
        engine.process(_calls(3), 7, NOW)
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: {TP("calls", 0)}))  # 1 moved on meanwhile
    ownership = PartitionOwnership(app, "calls", "fleet", store, on_rewind=lambda _topic: None)  # type: ignore[arg-type]

    asyncio.run(ownership.hand_over_all())

    written = {event[2].split(b"|")[0] for event in log.events if event[0] == "write"}
    assert written == {b"0"}  # partition 1's engine is not ours to write any more
    assert log.events[-2][2] == b"0|cursor/next" and log.events[-1] == ("flush",)
    assert 0 not in store.engines()


def test_a_worker_stopped_before_its_consumer_started_hands_over_nothing() -> None:
    def not_started() -> set[TP]:
        raise ConsumerNotStarted("not started")

    log = RecordingStateLog()
    store = EngineStore(FakeTable(), FakeTable(), ScriptedEngine, FleetConfig(), state_log=log)  # type: ignore[arg-type]
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=not_started))
    asyncio.run(PartitionOwnership(app, "calls", "fleet", store, on_rewind=lambda _t: None).hand_over_all())  # type: ignore[arg-type]
    assert log.events == []


def test_revoking_a_partition_never_built_here_writes_nothing_and_builds_nothing() -> None:
    log = RecordingStateLog()
    store = EngineStore(FakeTable(), FakeTable(), ScriptedEngine, FleetConfig(), state_log=log)  # type: ignore[arg-type]
    ownership = PartitionOwnership(None, "calls", "fleet", store, on_rewind=lambda _topic: None)  # type: ignore[arg-type]
    asyncio.run(ownership.on_revoked(None, {TP("calls", 3)}))
    assert log.events == [("flush",)]
    assert store.engines() == {}


def test_an_engine_is_restored_from_its_own_partition_keys_only() -> None:
    state = FakeTable()
    state.data.update({b"1|a/x": b"one", b"10|a/x": b"ten", b"1|b/y": b"uno"})
    store = _scripted_store(state)
    assert store.engine(1).restored == {"a/x": b"one", "b/y": b"uno"}  # type: ignore[attr-defined]
    assert store.engine(10).restored == {"a/x": b"ten"}  # type: ignore[attr-defined]


def test_drop_forgets_a_revoked_engine_and_the_next_use_restores_it_from_the_table() -> None:
    state = FakeTable()
    store = _scripted_store(state)
    first = store.engine(0)
    state.data[b"0|a/x"] = b"written by the partition's owner meanwhile"
    store.drop(0)
    assert 0 not in store.engines()
    again = store.engine(0)
    assert again is not first and again.restored == {"a/x": b"written by the partition's owner meanwhile"}  # type: ignore[attr-defined]


def test_adopt_builds_missing_engines_and_engines_is_a_snapshot() -> None:
    store = _scripted_store()
    kept = store.engine(1)
    store.adopt([0, 1, 2])
    engines = store.engines()
    assert sorted(engines) == [0, 1, 2] and engines[1] is kept
    store.drop(2)
    assert sorted(engines) == [0, 1, 2]  # taken before the drop: unchanged
    with pytest.raises(TypeError):
        engines[5] = kept  # type: ignore[index]


def test_the_fleet_engine_round_trips_and_views_cache_nothing() -> None:
    fleet_table = FakeTable()
    store = _scripted_store(fleet=fleet_table)
    store.persist_fleet(NOW)  # nothing built yet: nothing to write
    assert fleet_table.changelog == [] and store.loaded_fleet() is None
    assert store.persisted_fleet_cursor() is None

    fleet = store.fleet()
    fleet.cursor.advance(41)
    fleet.applied[3] = 7
    store.persist_fleet(NOW)
    assert store.persisted_fleet_cursor() == 42
    assert fleet_table.changelog == [(0, FLEET_KEY, fleet_table.data[FLEET_KEY], "raw", "raw")]

    store.drop_fleet()
    assert store.loaded_fleet() is None
    view = store.fleet_view()  # rebuilt from the table for a view, not cached
    assert isinstance(view, FleetEngine) and view.cursor.next_offset == 42 and view.applied == {3: 7}
    assert store.loaded_fleet() is None
    restored = store.fleet()
    assert restored is store.loaded_fleet() is store.fleet_view() and restored.applied == {3: 7}


def test_a_fleet_stage_never_written_starts_at_the_fleet_topics_first_offset() -> None:
    store = _scripted_store()
    store.set_starts({}, fleet=5)
    assert store.fleet().cursor.next_offset == 5
    store.drop_fleet()
    store.set_starts({})  # a later assignment that found the fleet blob written, or no fleet partition
    assert store.fleet().cursor.next_offset is None
