"""Sliding windows answer for exactly the slots they cover, drop what is too old or too far ahead."""

from __future__ import annotations

import numpy as np
import pytest

from llmpulse.processors.core.windows import RingSpec, SlidingCounters, SlidingWindowSketches

T0 = 1_700_000_000_000  # a multiple of 10 s, so slot k starts at T0 + 10_000 k
HOUR_MS = 3_600_000


def _traffic(seconds: int, per_second: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Events spread over [T0, T0 + seconds): latency 100 ms-ish, except 1,000 ms-ish in the last minute."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, seconds * 1000, seconds * per_second))
    latency = rng.lognormal(np.log(100.0), 0.3, ts.size)
    last_minute = ts >= T0 + (seconds - 60) * 1000
    latency[last_minute] *= 10.0
    return ts, latency


def _feed(windows: SlidingWindowSketches, ts: np.ndarray, values: np.ndarray, batch: int = 500) -> None:
    for start in range(0, ts.size, batch):
        windows.add_many(ts[start : start + batch], values[start : start + batch])


def test_each_window_matches_exact_quantiles_of_its_slots() -> None:
    ts, latency = _traffic(3600, 20)
    windows = SlidingWindowSketches()
    _feed(windows, ts, latency)
    now = int(ts[-1])
    now_slot = now // 10_000
    for window_s in (60, 300, 3600):
        inside = ts // 10_000 > now_slot - window_s // 10
        assert windows.count(window_s, now) == int(inside.sum())
        exact = np.quantile(latency[inside], [0.5, 0.95, 0.99], method="lower")
        np.testing.assert_allclose(windows.quantiles(window_s, [0.5, 0.95, 0.99], now), exact, rtol=0.01)
    # What a user sees: the last minute is slow, the hour is not.
    assert windows.quantiles(60, [0.5], now)[0] > 800
    assert windows.quantiles(3600, [0.5], now)[0] < 120


def test_window_slides_with_now() -> None:
    windows = SlidingWindowSketches()
    windows.add_many(np.array([T0 + 5_000]), np.array([7.0]))
    assert windows.count(60, T0 + 5_000) == 1
    assert windows.count(60, T0 + 59_999) == 1  # slot 0 still among the 6 slots ending at slot 5
    assert windows.count(60, T0 + 60_000) == 0  # slot 6 is now: slot 0 fell out of the minute
    assert windows.count(300, T0 + 60_000) == 1
    assert np.isnan(windows.quantiles(60, [0.5], T0 + 60_000)).all()


def test_events_older_than_the_ring_are_dropped_and_counted() -> None:
    windows = SlidingWindowSketches()
    windows.add_many(np.array([T0 + HOUR_MS]), np.array([1.0]))
    kept = windows.add_many(np.array([T0, T0 + 1, T0 + 20_000]), np.array([5.0, 5.0, 5.0]))
    assert kept == 1  # slot 2 is inside the hour-long ring, slot 0 is exactly one ring behind the head
    assert windows.dropped_late == 2
    assert windows.count(3600, T0 + HOUR_MS) == 2


def test_events_too_far_in_the_future_are_rejected() -> None:
    windows = SlidingWindowSketches(RingSpec(future_tolerance_s=30))
    now = T0 + 100_000
    kept = windows.add_many(np.array([now, now + 30_000, now + 30_001, now + 10 * HOUR_MS]), np.ones(4), now)
    assert kept == 2 and windows.rejected_future == 2
    # The bogus far-future event did not move the head: ordinary events are still accepted.
    assert windows.add_many(np.array([now - 1000]), np.ones(1), now) == 1
    assert windows.dropped_late == 0


def test_mixed_batch_keeps_values_aligned_with_their_timestamps() -> None:
    windows = SlidingWindowSketches()
    windows.add_many(np.array([T0 + HOUR_MS]), np.array([1.0]))
    now = T0 + HOUR_MS + 10_000
    ts = np.array([T0, now, now + 10 * HOUR_MS, T0 + HOUR_MS - 20_000])  # late, ok, future, ok
    assert windows.add_many(ts, np.array([100.0, 2.0, 200.0, 3.0]), now) == 2
    assert (windows.dropped_late, windows.rejected_future) == (1, 1)
    assert windows.quantiles(3600, [0.0, 0.5, 1.0], now).tolist() == [1.0, pytest.approx(2.0, rel=0.01), 3.0]


def test_reused_ring_position_forgets_the_old_slot() -> None:
    windows = SlidingWindowSketches()
    windows.add_many(np.full(10, T0), np.full(10, 1000.0))
    windows.add_many(np.full(3, T0 + HOUR_MS), np.full(3, 10.0))  # same ring position, one hour later
    assert windows.count(3600, T0 + HOUR_MS) == 3
    assert windows.quantiles(3600, [1.0], T0 + HOUR_MS)[0] == 10.0


def test_batch_spanning_many_slots_is_grouped_per_slot() -> None:
    windows = SlidingWindowSketches()
    ts = T0 + np.arange(0, 120_000, 1000)[::-1]  # two minutes, newest first
    windows.add_many(ts, np.arange(ts.size, dtype=float) + 1.0)
    assert windows.count(60, T0 + 119_000) == 60
    assert windows.count(300, T0 + 119_000) == 120
    assert windows.quantiles(60, [0.0, 1.0], T0 + 119_000).tolist() == [1.0, 60.0]


def test_sketch_windows_round_trip_through_bytes() -> None:
    ts, latency = _traffic(900, 10, seed=4)
    windows = SlidingWindowSketches(RingSpec(10, (60, 300, 900)))
    _feed(windows, ts, latency)
    windows.add_many(np.array([T0 - 20_000]), np.array([1.0]))  # behind the 90-slot ring: counted, not kept
    restored = SlidingWindowSketches.from_bytes(windows.to_bytes())
    now = int(ts[-1])
    assert restored.spec == windows.spec
    assert restored.dropped_late == windows.dropped_late == 1
    for window_s in (60, 300, 900):
        assert restored.count(window_s, now) == windows.count(window_s, now)
        np.testing.assert_array_equal(
            restored.quantiles(window_s, [0.5, 0.99], now), windows.quantiles(window_s, [0.5, 0.99], now)
        )
    restored.add_many(np.array([now]), np.array([5.0]))
    assert restored.count(60, now) == windows.count(60, now) + 1


def test_an_hour_of_light_traffic_serializes_compactly() -> None:
    ts, latency = _traffic(3600, 1, seed=6)  # 10 events per 10 s slot
    windows = SlidingWindowSketches()
    _feed(windows, ts, latency)
    blob = windows.to_bytes()
    assert len(blob) < 360 * 80  # per slot: 24 B of totals, a ~20 B bucket bitmap, ~10 B of counts, ids
    restored = SlidingWindowSketches.from_bytes(blob)
    now = int(ts[-1])
    for q in (0.5, 0.9):
        assert restored.quantiles(3600, [q], now)[0] == windows.quantiles(3600, [q], now)[0]


def test_expired_slots_are_not_serialized() -> None:
    windows = SlidingWindowSketches(RingSpec(10, (60,)))
    windows.add_many(T0 + np.arange(60) * 1000, np.random.default_rng(0).lognormal(5, 1, 60))
    full = len(windows.to_bytes())
    windows.add_many(np.array([T0 + 10 * 60_000]), np.array([3.0]))  # ten minutes later: all else expired
    assert len(windows.to_bytes()) < full / 3
    assert SlidingWindowSketches.from_bytes(windows.to_bytes()).count(60, T0 + 10 * 60_000) == 1


def test_memory_is_bounded_by_ring_length() -> None:
    windows = SlidingWindowSketches(RingSpec(10, (60, 300)))
    for hour in range(3):
        windows.add_many(T0 + hour * HOUR_MS + np.arange(0, HOUR_MS, 997), np.ones(3611))
    assert len(windows._sketches) == 30
    assert sum(s is not None for s in windows._sketches) == 30


@pytest.mark.parametrize(
    "kwargs", [{"interval_s": 0}, {"windows_s": ()}, {"windows_s": (65,)}, {"windows_s": (60, -10)}]
)
def test_ring_spec_rejects_bad_windows(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RingSpec(**kwargs)


def test_query_for_unconfigured_window_is_rejected() -> None:
    windows = SlidingWindowSketches()
    with pytest.raises(ValueError):
        windows.count(7200, T0)
    with pytest.raises(ValueError):
        windows.count(45, T0)


def test_counters_total_each_column_over_windows() -> None:
    rng = np.random.default_rng(1)
    ts = T0 + np.sort(rng.integers(0, 600_000, 20_000))
    errors = rng.random(ts.size) < 0.05
    cache = rng.random(ts.size) < 0.3
    counters = SlidingCounters()
    for start in range(0, ts.size, 500):
        part = slice(start, start + 500)
        counters.add_many(ts[part], requests=np.ones(ts[part].size, dtype=np.int64), errors=errors[part],
                          cache_hits=cache[part])
    now = int(ts[-1])
    for window_s in (60, 300, 3600):
        inside = ts // 10_000 > now // 10_000 - window_s // 10
        totals = counters.totals(window_s, now)
        assert totals["requests"] == int(inside.sum())
        assert totals["errors"] == int(errors[inside].sum())
        assert totals["cache_hits"] == int(cache[inside].sum())
        assert totals["timeouts"] == 0


def test_counters_reuse_late_and_future_rules() -> None:
    counters = SlidingCounters(("requests", "errors"), RingSpec(10, (60,)))
    counters.add_many(np.array([T0, T0]), requests=np.array([1, 1]), errors=np.array([1, 0]))
    counters.add_many(np.array([T0 + 60_000]), requests=np.array([1]))  # same ring position, a minute later
    assert counters.totals(60, T0 + 60_000) == {"requests": 1, "errors": 0}
    counters.add_many(np.array([T0 + 5_000, T0 + 999_999]), now_ms=T0 + 60_000, requests=np.array([1, 1]))
    assert counters.dropped_late == 1 and counters.rejected_future == 1
    with pytest.raises(ValueError):
        counters.add_many(np.array([T0]), bogus=np.array([1]))


def test_counters_round_trip_through_bytes() -> None:
    counters = SlidingCounters()
    ts = T0 + np.arange(0, 3_600_000, 250)
    counters.add_many(ts, requests=np.ones(ts.size, dtype=np.int64), errors=(ts // 1000) % 7 == 0)
    blob = counters.to_bytes()
    restored = SlidingCounters.from_bytes(blob)
    now = int(ts[-1])
    assert restored.columns == counters.columns
    for window_s in (60, 300, 3600):
        assert restored.totals(window_s, now) == counters.totals(window_s, now)
    assert len(blob) < 360 * 6 * 2 + 360 * 2 + 200  # 16-bit counters and offsets for an hour of 4 req/s
