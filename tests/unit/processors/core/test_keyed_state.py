"""Offset-stamped state: a replayed record changes nothing twice; slots expire; deletions become tombstones."""

from __future__ import annotations

from llmpulse.processors.core.keyed_state import Admission, KeyedState, SourceCursor
from llmpulse.processors.core.slots import SlotSeries
from llmpulse.processors.core.traffic import CounterVector


def _counters() -> KeyedState[CounterVector]:
    return KeyedState("t", lambda _key: CounterVector(), CounterVector.from_bytes)


def test_each_object_absorbs_an_offset_once_and_restores_with_its_stamp() -> None:
    state = _counters()
    first = state.for_update("a", offset=5)
    assert first is not None
    first.values[0] += 1
    assert state.for_update("a", offset=5) is None  # replay of the same record
    assert state.for_update("a", offset=4) is None  # an older one
    saved = dict(state.drain())

    restored = _counters()
    restored.restore("a", saved["a"])  # type: ignore[arg-type]
    assert restored.for_update("a", offset=5) is None
    again = restored.for_update("a", offset=6)
    assert again is not None and again.values[0] == 1
    assert list(state.drain()) == []  # nothing changed since the last drain


def test_deleted_objects_drain_as_tombstones() -> None:
    state = _counters()
    state.for_update("gone", 1)
    list(state.drain())
    state.delete("gone")
    assert list(state.drain()) == [("gone", None)]


def test_slots_answer_windows_and_expire_beyond_the_horizon() -> None:
    slots = SlotSeries("lat", interval_s=10, horizon_s=60, create=CounterVector, load=CounterVector.from_bytes)
    now = 1_000_000_000_000
    for age_s in (5, 15, 45):
        slot = (now - age_s * 1000) // 10_000
        vector = slots.for_update("svc", slot, offset=age_s, now_ms=now)
        assert vector is not None
        vector.values[0] += age_s
    assert sum(v.values[0] for v in slots.window("svc", 30, now)) == 5 + 15
    assert sum(v.values[0] for v in slots.window("svc", 60, now)) == 65
    assert slots.for_update("svc", (now - 120_000) // 10_000, offset=99, now_ms=now) is None  # too late
    assert slots.dropped_late == 1
    later = now + 40_000
    assert slots.evict(later) == 2  # the 15 s and 45 s slots are now beyond the 60 s horizon
    assert [v.values[0] for v in slots.window("svc", 60, later)] == [5]
    deleted = [key for key, blob in slots.state.drain() if blob is None]
    assert len(deleted) == 2


def test_the_source_cursor_covers_what_was_absorbed_and_persists_only_when_it_moves() -> None:
    cursor = SourceCursor()
    assert not cursor.covers(0) and cursor.drain() is None  # nothing absorbed: trust the committed offset
    cursor.advance(41)
    cursor.advance(40)  # a replayed older record does not move it back
    blob = cursor.drain()
    assert blob is not None and cursor.drain() is None
    restored = SourceCursor.from_bytes(blob)
    assert restored.next_offset == 42
    assert restored.covers(41) and not restored.covers(42)


def test_a_record_beyond_the_cursor_rewinds_until_the_missing_ones_arrive() -> None:
    cursor = SourceCursor(10)
    assert cursor.admit(9) is Admission.ABSORBED  # a replay of what state already holds
    assert cursor.admit(12) is Admission.REWIND  # 10 and 11 never arrived
    assert cursor.admit(13) is Admission.REWIND  # buffered before the seek: still not in order
    assert cursor.admit(10) is Admission.PROCESS  # the seek took effect
    cursor.advance(10)
    assert cursor.admit(11) is Admission.PROCESS


def test_offsets_without_records_are_crossed_after_one_rewind() -> None:
    cursor = SourceCursor(10)  # 10 and 11 are transaction markers: after the seek, 12 comes first
    assert cursor.admit(12) is Admission.REWIND
    assert cursor.admit(12) is Admission.PROCESS
    cursor.advance(12)
    assert cursor.admit(13) is Admission.PROCESS


def test_a_partition_with_nothing_persisted_trusts_the_committed_offset() -> None:
    assert SourceCursor().admit(500) is Admission.PROCESS
