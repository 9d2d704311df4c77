"""Folded slots (slots.py): slots far behind a series' newest call merge into coarse ones, which leaves every
window up to ``exact_s`` exactly as it was, counts every call the horizon accepts, keeps replays idempotent and
survives a crash between writing a folded slot and deleting what it folded."""

from __future__ import annotations

import numpy as np

from llmpulse.processors.core.slots import SlotSeries
from llmpulse.processors.core.traffic import CounterVector

START_MS = 1_699_999_800_000  # a multiple of 300 s: folds start on a slot boundary here
INTERVAL_S, HORIZON_S, EXACT_S, FOLD_S = 10, 3600, 480, 300


def _slots(fold: bool = True, horizon_s: int = HORIZON_S) -> SlotSeries[CounterVector]:
    return SlotSeries("t", INTERVAL_S, horizon_s, CounterVector, CounterVector.from_bytes, CounterVector.merge,
                      EXACT_S, FOLD_S if fold else 0)


def _add(slots: SlotSeries[CounterVector], at_ms: int, offset: int, now_ms: int, count: int = 1) -> bool:
    vector = slots.for_update("svc", at_ms // (INTERVAL_S * 1000), offset, now_ms)
    if vector is not None:
        vector.values[0] += count
    return vector is not None


def _sum(slots: SlotSeries[CounterVector], window_s: int, now_ms: int) -> int:
    return sum(int(v.values[0]) for v in slots.window("svc", window_s, now_ms))


def _fed(seconds: int, seed: int = 3) -> tuple[SlotSeries[CounterVector], ...]:
    """The same sparse calls (~1 every 20 s) into a folding slot series, a plain one and a plain one of a longer
    horizon, evicted every 5 s; and the time of the last."""
    rng = np.random.default_rng(seed)
    every = folding, plain, longer = _slots(), _slots(fold=False), _slots(fold=False, horizon_s=HORIZON_S + FOLD_S)
    now = START_MS
    for step in range(seconds // 5):
        now = START_MS + (step + 1) * 5_000
        for at in np.sort(rng.integers(now - 5_000, now, rng.poisson(0.25))).tolist():
            for slots in every:
                _add(slots, at, step, now, count=1 + at % 3)
        for slots in every:
            slots.evict(now)
    return folding, plain, longer, now


def test_windows_up_to_exact_s_read_as_without_folding_and_the_hour_only_reaches_further_back() -> None:
    folding, plain, longer, now = _fed(7_200)
    assert len(folding.state) < len(plain.state) / 2  # far fewer slots (and keys, stamps, headers) to persist
    for later_s in range(0, 600, 5):
        at = now + later_s * 1000
        for window_s in (60, 300, EXACT_S):
            assert _sum(folding, window_s, at) == _sum(plain, window_s, at)
        hour, hour_plain = _sum(folding, HORIZON_S, at), _sum(plain, HORIZON_S, at)
        assert hour_plain <= hour <= _sum(longer, HORIZON_S + FOLD_S, at)  # the far edge moves out by < fold_s
    # every folded slot lies wholly behind the newest call by more than exact_s, and on the fold grid
    newest = max(folding._by_series["svc"])
    for first, (last, _item) in folding._folded["svc"].items():
        assert first % (FOLD_S // INTERVAL_S) == 0 and last - first + 1 == FOLD_S // INTERVAL_S
        assert last <= newest - EXACT_S // INTERVAL_S


def test_a_late_call_goes_into_its_folded_slot_and_a_replay_of_it_is_skipped() -> None:
    folding, plain, _longer, now = _fed(3_600)
    first = max(folding._folded["svc"])  # the newest folded slot
    last = folding._folded["svc"][first][0]
    late_ms = (first + 1) * INTERVAL_S * 1000
    before = _sum(folding, HORIZON_S, now)
    assert _add(folding, late_ms, offset=10_000, now_ms=now, count=5)
    assert _add(plain, late_ms, offset=10_000, now_ms=now, count=5)
    assert _sum(folding, HORIZON_S, now) == before + 5
    assert not _add(folding, late_ms, offset=10_000, now_ms=now)  # the same record again: already absorbed
    assert f"svc@{first}+{last - first + 1}" in dict(folding.state.drain())
    assert first not in folding._by_series["svc"]  # no slot of its own inside a folded one
    assert _sum(folding, 300, now) == _sum(plain, 300, now)


def test_state_restores_with_its_folded_slots_and_stamps() -> None:
    folding, _plain, _longer, now = _fed(3_600)
    persisted = {key: blob for key, blob in folding.state.drain() if blob is not None}
    assert any("+" in key for key in persisted)
    restored = _slots()
    for key, blob in persisted.items():
        restored.restore(key, blob)
    for window_s in (60, 300, 3600):
        assert _sum(restored, window_s, now) == _sum(folding, window_s, now)
    assert list(restored.state.drain()) == []  # nothing to rewrite
    newest = max(restored._folded["svc"])  # (the oldest may reach beyond the horizon)
    assert not _add(restored, newest * INTERVAL_S * 1000, offset=0, now_ms=now)  # stamped: an old record is skipped
    assert _add(restored, newest * INTERVAL_S * 1000, offset=10_000, now_ms=now)  # a new one is not


def test_a_crash_between_a_folded_slot_and_the_tombstones_of_what_it_folded_counts_nothing_twice() -> None:
    slots = _slots()
    now = START_MS + 4 * FOLD_S * 1000
    old_ms = START_MS  # six calls in the first fold of 300 s, which lies wholly exact_s behind the last call
    for k in range(6):
        _add(slots, old_ms + k * 20_000, offset=k, now_ms=now)
    _add(slots, now, offset=6, now_ms=now)
    before = dict(slots.state.drain())  # persisted: seven slots
    slots.evict(now)  # folds the six old ones into one
    drained = list(slots.state.drain())
    written = [key for key, blob in drained if blob is not None]
    assert len(written) == 1 and "+" in written[0]
    assert [key for key, _blob in drained].index(written[0]) == 0  # written before any tombstone
    # the folded slot reached the changelog, its tombstones did not: all seven old slots are still there too
    store = {**{k: b for k, b in before.items() if b is not None}, written[0]: dict(drained)[written[0]]}
    for order in (sorted(store), sorted(store, reverse=True)):
        restored = _slots()
        for key in order:
            restored.restore(key, store[key])  # type: ignore[arg-type]
        assert _sum(restored, HORIZON_S, now) == 7
        deleted = [key for key, blob in restored.state.drain() if blob is None]
        assert len(deleted) == 6  # the leftovers go (again)


def test_a_folded_slot_expires_only_when_all_of_it_is_beyond_the_horizon() -> None:
    slots = _slots()
    now = START_MS
    _add(slots, now, offset=1, now_ms=now)
    _add(slots, now + 100_000, offset=2, now_ms=now + 100_000)
    later = now + 1_200_000
    _add(slots, later, offset=3, now_ms=later)
    slots.evict(later)
    assert len(slots._folded["svc"]) == 1  # both early calls in one fold of 300 s
    slots.evict(now + HORIZON_S * 1000 + 60_000)  # the first call is beyond the horizon, the second not
    assert _sum(slots, HORIZON_S, now + HORIZON_S * 1000 + 60_000) == 3
    slots.evict(now + HORIZON_S * 1000 + FOLD_S * 1000)
    assert "svc" not in slots._folded and _sum(slots, HORIZON_S, now + HORIZON_S * 1000 + FOLD_S * 1000) == 1
    slots.evict(later + HORIZON_S * 1000)
    assert slots.series() == [] and len(slots.state) == 0
