"""Drift counted from a batch's cells (binned once per batch, a lone call counted without numpy) keeps exactly the
state and verdicts of counting each series' values with numpy, as the monitor did before."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmpulse.processors.core import drift_monitor
from llmpulse.processors.core.abtest import Welford
from llmpulse.processors.core.drift import MeanDrift
from llmpulse.processors.core.drift_monitor import FEATURES, TOKEN_CLASSES, DriftConfig, DriftMonitor, SeriesDrift

CONFIG = DriftConfig(reference_size=200, block_size=100, min_current=40)  # looks every 20 values: many crossed


def numpy_update(drift: SeriesDrift, values: dict[str, np.ndarray]) -> None:
    """The per-series numpy counting the monitor replaced: the oracle."""
    confidence = np.asarray(values["confidence"], dtype=np.float64)
    present = confidence[~np.isnan(confidence)]
    if present.size:
        drift.mean.update(present)
    tokens = np.asarray(values["tokens"], dtype=np.float64)
    drift.features["confidence"].update(confidence)
    drift.features["tokens"].update(tokens)
    drift.features["latency"].update(values["latency"], np.searchsorted(TOKEN_CLASSES, tokens, side="right"))


def batch(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    confidence = rng.beta(8, 2, n)
    confidence[rng.random(n) < 0.1] = np.nan
    latency = rng.lognormal(0.0, 1.0, n)
    latency[rng.random(n) < 0.05] = np.nan
    return {"confidence": confidence, "latency": latency, "tokens": np.round(rng.lognormal(6.0, 1.5, n))}


@pytest.mark.parametrize("seed", [3, 11])
def test_a_monitor_fed_batches_over_many_series_keeps_what_per_series_numpy_counting_kept(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    keys = [f"svc-{i}\x1fgpt-4o" for i in range(12)]
    monitor = DriftMonitor(CONFIG)
    oracle = {key: SeriesDrift(CONFIG) for key in keys}
    for offset in range(1, 250):
        n = int(rng.choice([1, 2, 5, 30, 120]))  # lone calls, a few, and batches crossing several looks
        calls = batch(rng, n)
        touched = rng.choice(len(keys), size=min(len(keys), int(rng.integers(1, 8))), replace=False)
        inverse = rng.integers(0, touched.size, n)
        series = [keys[i] for i in touched]
        monitor.update(series, inverse, calls, offset)
        with monkeypatch.context() as patched:
            patched.setattr(drift_monitor, "FEW_CELLS", -1)  # the oracle counts with numpy only
            for s, key in enumerate(series):
                rows = np.flatnonzero(inverse == s)
                numpy_update(oracle[key], {name: column[rows] for name, column in calls.items()})
        for key in series:
            kept = monitor.state.get(key)
            assert kept is not None and kept.to_bytes() == oracle[key].to_bytes()
            assert [kept.features[f].verdict for f in FEATURES] == [oracle[key].features[f].verdict for f in FEATURES]
    judged = [monitor.state.get(key).features["latency"].verdict for key in keys]  # type: ignore[union-attr]
    assert any(verdict is not None for verdict in judged)  # the run reached judged looks, not only filling


@pytest.mark.parametrize("value", [0.25, 1e300, -3.5, math.inf, -math.inf, math.nan])
def test_adding_one_value_is_updating_with_a_batch_of_one(value: float) -> None:
    added, updated = Welford(3, 0.5, 0.25), Welford(3, 0.5, 0.25)
    added.add(value)
    updated.update(np.array([value]))
    assert repr(added) == repr(updated)


def test_a_mean_drift_fed_one_value_at_a_time_matches_batches_of_one_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    added, updated = MeanDrift(20, 8, 4, recent_size=3), MeanDrift(20, 8, 4, recent_size=3)
    values = rng.normal(0.7, 0.1, 120)
    values[rng.random(120) < 0.1] = np.nan
    for k, value in enumerate(values.tolist()):
        added.add(value)
        updated.update(np.array([value]))
        if k == 70:  # a rebaseline leaves a baseline larger than its size: no more values go into it
            added.rebaseline()
            updated.rebaseline()
        assert added.to_bytes() == updated.to_bytes()
    assert added.percent_change() == updated.percent_change() and not math.isnan(added.percent_change())


@pytest.mark.parametrize("config", [CONFIG, DriftConfig()], ids=["small-blocks", "defaults"])
def test_narrow_counters_keep_the_bytes_and_verdicts_of_int32_ones(config: DriftConfig,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ring and window counters as narrow as a look's and a block's values allow (int8 and int16 by default)
    decide and persist exactly what int32 counters did, through fills, freezes, judged looks and a restore."""
    narrow = SeriesDrift(config)
    with monkeypatch.context() as patched:
        patched.setattr(drift_monitor, "count_dtype", lambda _bound: np.dtype(np.int32))
        wide = SeriesDrift(config)
    assert narrow.features["latency"].ring.dtype == np.int8  # a look holds at most 100 (20) values
    assert narrow.features["latency"].window.dtype == (np.int16 if config.block_size > 127 else np.int8)
    assert wide.features["latency"].ring.dtype == np.int32
    rng = np.random.default_rng(23)
    shifted = False
    for step in range(300):
        calls = batch(rng, int(rng.choice([1, 7, 60, 150])))
        if step > 200:  # a shift, so judged looks find drift
            calls["latency"] = calls["latency"] * 3.0
            shifted = True
        narrow.update(calls)
        wide.update(calls)
        assert narrow.to_bytes() == wide.to_bytes()
        assert [narrow.features[f].verdict for f in FEATURES] == [wide.features[f].verdict for f in FEATURES]
    assert shifted and narrow.features["latency"].frozen
    restored = SeriesDrift.from_bytes(narrow.to_bytes(), config)
    assert restored.to_bytes() == wide.to_bytes()
    assert restored.features["latency"].ring.dtype == np.int8


def test_sub_blocks_persisted_with_larger_looks_are_restored_wider_not_wrapped() -> None:
    """A ring written while looks held 200 values, restored where they hold 100 (int8 counters): the counts
    past 127 widen the counters instead of wrapping."""
    before, after = DriftConfig(block_size=1000), DriftConfig(block_size=500)
    drift = SeriesDrift(before)
    drift.update({"confidence": np.full(190, 0.9), "latency": np.full(190, 1.5), "tokens": np.full(190, 100.0)})
    restored = SeriesDrift.from_bytes(drift.to_bytes(), after)
    kept = restored.features["latency"]
    assert int(kept.ring.max()) == 190 and int(kept.window.max()) == 190
    assert np.array_equal(kept.ring, drift.features["latency"].ring)


def _allocated(config: DriftConfig) -> SeriesDrift:
    """A series whose features hold their counter arrays from the start, as every feature did before features
    counted their first look in a dict: the oracle."""
    drift = SeriesDrift(config)
    for feature in drift.features.values():
        feature._allocate()
    return drift


@pytest.mark.parametrize("config", [CONFIG, DriftConfig()], ids=["small-blocks", "defaults"])
@pytest.mark.parametrize("seed", [5, 19])
def test_a_series_counting_its_first_look_in_a_dict_persists_and_decides_what_counter_arrays_did(
        config: DriftConfig, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lazy, eager = SeriesDrift(config), _allocated(config)
    held_first = allocated = restored_first = 0
    for step in range(160):
        calls = batch(rng, int(rng.choice([1, 2, 3, 9, 40, 150])))
        if step > 120:
            calls["latency"] = calls["latency"] * 3.0
        lazy.update(calls)
        eager.update(calls)
        assert lazy.to_bytes() == eager.to_bytes()
        assert [lazy.features[f].verdict for f in FEATURES] == [eager.features[f].verdict for f in FEATURES]
        assert [lazy.features[f].reference_count for f in FEATURES] == [
            eager.features[f].reference_count for f in FEATURES]
        held_first += sum(feature._first is not None for feature in lazy.features.values())
        if rng.random() < 0.15:  # a restart: the persisted state restored, a first look again as a dict
            lazy = SeriesDrift.from_bytes(lazy.to_bytes(), config)
            restored_first += sum(feature._first is not None for feature in lazy.features.values())
            assert lazy.to_bytes() == eager.to_bytes()
        if rng.random() < 0.05:  # a resolved drift incident: the feature starts over, a dict again
            lazy.rebaseline("latency", step)
            eager.rebaseline("latency", step)
            assert lazy.features["latency"]._first == {}
        allocated += sum(feature._first is None for feature in lazy.features.values())
    assert held_first and allocated
    if config is CONFIG:  # looks every 20 values: judged looks, and restores inside a first look
        assert restored_first and lazy.features["tokens"].verdict is not None


def test_series_that_saw_few_calls_hold_no_counter_arrays() -> None:
    """Most series of a large fleet see few calls: their drift state stays small (the arrays come at a look)."""
    rng = np.random.default_rng(2)
    few = [SeriesDrift(DriftConfig()) for _ in range(200)]
    for drift in few:
        drift.update(batch(rng, 30))
    held = sum(array.nbytes for drift in few for feature in drift.features.values()
               for array in (feature._reference, feature._window, feature._ring) if array is not None)
    assert held == 0
    busy = SeriesDrift(DriftConfig())
    busy.update(batch(rng, 150))  # past its first look
    assert busy.features["latency"].ring.nbytes > 10_000


@pytest.mark.parametrize("config", [CONFIG, DriftConfig()], ids=["small-blocks", "defaults"])
def test_the_value_that_completes_the_first_look_takes_the_look(config: DriftConfig) -> None:
    lazy, eager = SeriesDrift(config), _allocated(config)
    size = config.look_size
    for n in (size // 3, size - size // 3):  # the second batch ends the first look exactly
        calls = {"confidence": np.full(n, 0.9), "latency": np.full(n, 1.0), "tokens": np.full(n, 100.0)}
        lazy.update(calls)
        eager.update(calls)
        assert lazy.to_bytes() == eager.to_bytes()
    assert [lazy.features[f].ring_pos for f in FEATURES] == [1, 1, 1]


def test_odd_persisted_counts_outside_a_first_look_are_restored_as_they_were() -> None:
    """A blob whose position and settled count say "first look" but whose counts say otherwise (written by hand, or
    by a version that kept its counters another way) is held as counter arrays, as before, not cut to a dict."""
    for odd in ("later sub-block", "reference", "negative count", "frozen with nothing settled"):
        drift = _allocated(CONFIG)
        feature = drift.features["tokens"]
        if odd == "later sub-block":
            feature.ring[2, 0, 5] = 3
        elif odd == "reference":
            feature.reference[0, 5] = 3
        elif odd == "negative count":
            feature.ring[0, 0, 5], feature.ring[0, 0, 7], feature.ring_fill = 2, -1, 1
        else:
            feature.frozen = True
        restored = SeriesDrift.from_bytes(drift.to_bytes(), CONFIG)
        assert restored.features["tokens"]._first is None
        assert restored.to_bytes() == drift.to_bytes()
