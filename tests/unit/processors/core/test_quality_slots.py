"""A quality series' slots as one matrix (issue 16): the same window sums and bytes as a vector per slot, half
the memory, and nothing kept past the reference window."""

from __future__ import annotations

import numpy as np

from llmpulse.processors.core.quality import CALLS, RATED, SCORE, WIDTH, QualitySlots

MINUTE = 60_000


def _vector(rng: np.random.Generator, rated: bool) -> np.ndarray:
    v = np.zeros(WIDTH)
    v[CALLS] = rng.integers(0, 5)
    if rated:
        v[RATED], v[SCORE] = 1.0, rng.random()
    return v


def test_window_sums_are_the_sums_of_what_was_added_in_the_order_it_came() -> None:
    rng = np.random.default_rng(3)
    slots = QualitySlots()
    added: dict[int, np.ndarray] = {}
    for step in range(400):  # mostly the newest minute, sometimes a late one
        start = (step // 5 - (3 if step % 7 == 0 else 0)) * MINUTE
        vector = _vector(rng, rated=step % 3 == 0)
        slots.add(start, vector)
        added[start] = added[start] + vector if start in added else vector.copy()
    for lo, hi in ((0, 10 * MINUTE), (17 * MINUTE, 61 * MINUTE), (0, 10**12)):
        expected = np.zeros(WIDTH)
        for start, vector in added.items():  # the float sums the dict of vectors gave, bit for bit
            if lo <= start < hi:
                expected += vector
        assert slots.total(lo, hi).tobytes() == expected.tobytes()
    assert slots.rated_ms == max(s for s, v in added.items() if v[RATED])


def test_bytes_round_trip_and_old_slots_go() -> None:
    rng = np.random.default_rng(4)
    slots = QualitySlots()
    for minute in (5, 3, 4, 9, 3):
        slots.add(minute * MINUTE, _vector(rng, rated=minute == 4))
    again = QualitySlots.from_bytes(slots.to_bytes())
    assert again.to_bytes() == slots.to_bytes() and again.rated_ms == 4 * MINUTE
    assert sorted(again.slots) == [3 * MINUTE, 4 * MINUTE, 5 * MINUTE, 9 * MINUTE]
    again.add(9 * MINUTE, _vector(rng, rated=False))  # restored arrays are writable
    slots.evict(5 * MINUTE)
    assert sorted(slots.slots) == [5 * MINUTE, 9 * MINUTE]
    assert slots.total(0, 5 * MINUTE).sum() == 0


def test_a_slot_costs_its_numbers_and_little_more() -> None:
    slots = QualitySlots()
    for minute in range(76):  # a series' whole reach: window + reference + a slot
        slots.add(minute * MINUTE, np.ones(WIDTH))
    assert slots.starts.nbytes + slots.matrix.nbytes == 76 * 8 * (WIDTH + 1)


def test_adding_a_records_slots_at_once_equals_adding_them_one_by_one() -> None:
    """``add_all`` (a record's slots of one series) leaves a series as ``add`` of each slot in turn would: a new
    series takes them as they are, one already holding slots gets them added and appended."""
    rng = np.random.default_rng(5)
    for earlier in (0, 3):
        at_once, one_by_one = QualitySlots(), QualitySlots()
        for k in range(earlier):
            vector = _vector(rng, rated=k == 1)
            at_once.add(k * MINUTE, vector)
            one_by_one.add(k * MINUTE, vector)
        starts = np.array([2, 3, 5, 9], dtype=np.int64) * MINUTE
        vectors = np.stack([_vector(rng, rated=k in (1, 2)) for k in range(4)])
        at_once.add_all(starts, vectors)
        for start, vector in zip(starts.tolist(), vectors, strict=True):
            one_by_one.add(start, vector)
        assert at_once.to_bytes() == one_by_one.to_bytes()
        assert at_once.rated_ms == one_by_one.rated_ms == 5 * MINUTE
        vectors[:] = 0.0  # the series keeps its own copy
        assert at_once.to_bytes() == one_by_one.to_bytes()
