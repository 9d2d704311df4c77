"""Kept window figures (window_cache.py) are exactly what computing them again gives.

Latency quantiles and traffic totals through a random history per seed: batches of calls for a few series
(late ones, ones stamped ahead of now, quiet spells), the timer's eviction and folding, a restart restoring
persisted slots, series that go and come back under a reused code, and the clock stepping forward (and once
back). After every step the windows of the series asked (now and then all of them) are read through the cache
and computed afresh, side by side.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmpulse.processors.core.latency import LatencyConfig, LatencyMonitor
from llmpulse.processors.core.series_index import SeriesIndex
from llmpulse.processors.core.slots import series_key
from llmpulse.processors.core.traffic import COLUMNS, TrafficConfig, TrafficMonitor

CONFIG = LatencyConfig(windows_s=(60, 300, 3600), interval_s=10, exact_s=480, fold_s=300)
TRAFFIC = TrafficConfig()
SERIES = [series_key((f"svc-{i}", "model", "provider")) for i in range(10)]
START_MS = 1_700_000_000_000


def _batch(rng: np.random.Generator, latency: LatencyMonitor, traffic: TrafficMonitor, now_ms: int,
           offset: int) -> None:
    chosen = rng.choice(len(SERIES), size=int(rng.integers(1, 4)), replace=False)
    n = int(rng.integers(1, 40))
    inverse = rng.choice(chosen, size=n)
    lateness_s = rng.choice([0, 0, 0, 5, 30, 200, 700, -25], size=n)  # some late, a few stamped ahead of now
    stamps = now_ms - (lateness_s * 1000).astype(np.int64) - rng.integers(0, 1000, n)
    seconds = rng.lognormal(0.0, 1.0, n) * 1000.0
    ttft = np.where(rng.random(n) < 0.5, seconds / 3.0, np.nan)
    latency.update(SERIES, inverse, stamps, seconds, ttft, offset, now_ms)
    counts = {"requests": np.ones(n, dtype=np.int64), "errors": rng.random(n) < 0.2,
              "tokens": rng.integers(1, 2_000, n)}
    traffic.update(SERIES, inverse, stamps, counts, offset, now_ms)


def _assert_same(latency: LatencyMonitor, traffic: TrafficMonitor, series: list[str], now_ms: int) -> None:
    for window_s in (*CONFIG.windows_s, CONFIG.alert_window_s):
        for ttft in (False, True):
            for guards in (False, True):
                count, figures = latency.window_quantiles(series, window_s, now_ms, ttft=ttft, guards=guards)
                fresh_count, fresh_figures, _until = latency._computed_quantiles(series, window_s, now_ms, ttft,
                                                                                 guards)
                np.testing.assert_array_equal(count, fresh_count)
                np.testing.assert_array_equal(figures, fresh_figures)  # NaN where NaN
    for window_s in (TRAFFIC.window_s, TRAFFIC.active_window_s):
        totals = traffic.window_matrix(series, window_s, now_ms)
        assert totals.shape == (len(series), len(COLUMNS))
        np.testing.assert_array_equal(totals, traffic._computed_matrix(series, window_s, now_ms)[0])


def _persist(latency: LatencyMonitor, traffic: TrafficMonitor, store: dict[tuple[str, str], bytes]) -> None:
    """What the worker writes after a group of records: changed slots, and tombstones of deleted ones."""
    for state in (*latency.states(), traffic.slots.state):
        for key, blob in state.drain():
            if blob is None:
                store.pop((state.namespace, key), None)
            else:
                store[(state.namespace, key)] = blob


def _restarted(store: dict[tuple[str, str], bytes]) -> tuple[LatencyMonitor, TrafficMonitor]:
    """New monitors restoring everything persisted (as a worker does after a restart)."""
    index = SeriesIndex(("service", "model", "provider"))
    latency, traffic = LatencyMonitor(CONFIG, index), TrafficMonitor(TRAFFIC, index)
    for (namespace, key), blob in store.items():
        if not latency.restore(namespace, key, blob):
            traffic.slots.restore(key, blob)
    return latency, traffic


@pytest.mark.parametrize("seed", range(12))
def test_kept_figures_equal_computed_ones_through_a_random_history(seed: int) -> None:
    rng = np.random.default_rng(seed)
    index = SeriesIndex(("service", "model", "provider"))  # shared, as in an engine
    latency, traffic = LatencyMonitor(CONFIG, index), TrafficMonitor(TRAFFIC, index)
    store: dict[tuple[str, str], bytes] = {}
    now_ms, offset = START_MS, 0
    for step in range(160):
        action = rng.random()
        if action < 0.55:
            offset += 1
            _batch(rng, latency, traffic, now_ms, offset)
        elif action < 0.75:
            latency.evict(now_ms)
            traffic.slots.evict(now_ms)
            # the engine gives codes of series no monitor holds back; a later series may reuse them
            latency.index.retain({*latency.series(), *traffic.slots.series()})
        elif action < 0.78 and step > 20:
            latency, traffic = _restarted(store)
        now_ms += int(rng.choice([0, 1_000, 5_000, 10_000, 60_000, 400_000, 1_800_000]))
        if step == 80:
            now_ms -= 15_000  # the clock stepped back once
        # a few series at a time (a series first asked long after it began may get a code another one left),
        # now and then every one (series with no slots included)
        asked = SERIES if step % 10 == 0 else [s for s in SERIES if rng.random() < 0.3]
        _assert_same(latency, traffic, asked, now_ms)
        _persist(latency, traffic, store)


def test_a_quiet_series_is_computed_again_only_when_a_slot_leaves_its_window() -> None:
    monitor = LatencyMonitor(CONFIG)
    series = SERIES[:1]
    latency = np.array([100.0, 200.0, 300.0])
    stamps = np.array([START_MS, START_MS, START_MS + 10_000])
    monitor.update(series, np.zeros(3, dtype=np.int64), stamps, latency, np.full(3, np.nan), 1, START_MS + 10_000)
    computed: list[int] = []
    compute = monitor._computed_quantiles

    def counting(*args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        computed.append(len(args[0]))  # type: ignore[arg-type]
        return compute(*args)  # type: ignore[arg-type]

    monitor._computed_quantiles = counting  # type: ignore[method-assign]
    for now_ms in (START_MS + 10_000, START_MS + 30_000, START_MS + 59_000):
        count, _ = monitor.window_quantiles(series, 60, now_ms)
        assert count.tolist() == [3]
    assert computed == [1]  # the same slots in the minute throughout
    count, _ = monitor.window_quantiles(series, 60, START_MS + 60_000)  # the first slot left the minute
    assert count.tolist() == [1] and computed == [1, 1]
    monitor.update(series, np.zeros(1, dtype=np.int64), np.array([START_MS + 60_000]), np.array([50.0]),
                   np.full(1, np.nan), 2, START_MS + 60_000)
    count, _ = monitor.window_quantiles(series, 60, START_MS + 60_000)  # the series changed
    assert count.tolist() == [2] and computed == [1, 1, 1]
