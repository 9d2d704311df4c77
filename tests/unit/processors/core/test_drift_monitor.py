"""Distribution and confidence drift as a user sees it: what fires, what does not, how fast, and what persists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.drift import BinnedDistribution, MeanDrift, ks_counts
from llmpulse.processors.core.drift_looks import residual_counts, size_offsets
from llmpulse.processors.core.drift_monitor import (
    _EDGES,
    FEATURES,
    DriftConfig,
    DriftMonitor,
    SeriesDrift,
    batch_cells,
)

KEY = "checkout\x1fgpt-4o"


def traffic(n: int, rng: np.random.Generator, error_rate: float = 0.02) -> dict[str, np.ndarray]:
    """Calls of one series: confidence ~ Beta(16, 4) (NaN on failed calls), latency growing with output tokens."""
    outputs = np.clip(rng.lognormal(5.0, 0.8, n), 1, 4000)
    inputs = np.clip(rng.lognormal(6.5, 0.9, n), 1, 20_000)
    latency = (0.3 + 0.0016 * outputs) * rng.lognormal(0.0, 0.3, n)
    confidence = rng.beta(16, 4, n)
    confidence[rng.random(n) < error_rate] = np.nan
    return {"confidence": confidence, "latency": latency, "tokens": inputs + outputs}


def feed(monitor: DriftMonitor, calls: dict[str, np.ndarray], batch: int = 10) -> list[list[Observation]]:
    """Records of ``batch`` calls at 1 call/s after the ones fed before; the observations after each record."""
    out = []
    n = len(calls["latency"])
    for lo in range(0, n, batch):
        part = {name: column[lo : lo + batch] for name, column in calls.items()}
        offset = _next_offset[id(monitor)] = _next_offset.get(id(monitor), 0) + 1
        monitor.update([KEY], np.zeros(len(part["latency"]), dtype=np.int64), part, offset)
        out.append(monitor.observe(KEY, offset * 1000, force=True))
    return out


_next_offset: dict[int, int] = {}


def firing(observations: list[Observation], feature: str) -> bool:
    for obs in observations:
        named = dict(obs.labels).get("feature", "confidence") if obs.rule == "distribution_drift" else "confidence"
        if named == feature and obs.severity is not None:
            return True
    return False


def calls_until_firing(batches: list[list[Observation]], feature: str, batch: int = 10) -> float:
    for k, observations in enumerate(batches):
        if firing(observations, feature):
            return (k + 1) * batch
    return math.inf


@pytest.mark.parametrize("seed", range(1, 9))
def test_five_percent_of_a_hundred_calls_in_a_bin_the_reference_left_empty_is_no_alert(seed: int) -> None:
    config = DriftConfig(reference_size=500, block_size=500, min_current=100)
    monitor = DriftMonitor(config)
    rng = np.random.default_rng(seed)
    reference = traffic(500, rng)
    feed(monitor, reference)
    current = traffic(100, rng)
    current["latency"][:5] = 200.0  # 5 % of the calls, far past the slowest reference call
    # The scenario of the issue: on the old fixed coarse bins with a 1e-4 floor this read as PSI ~0.3 ("significant").
    coarse = [BinnedDistribution(_EDGES["latency"]).coarsen(10) for _ in range(2)]
    coarse[0].update(reference["latency"])
    coarse[1].update(current["latency"])
    e, a = (np.maximum(d.counts / d.total, 1e-4) for d in coarse)
    assert np.sum((a - e) * np.log(a / e)) > 0.2
    assert coarse[0].counts[np.searchsorted(coarse[0].edges, 200.0, side="right")] == 0

    observations = feed(monitor, current)[-1]
    latency = next(o for o in observations if dict(o.labels).get("feature") == "latency")
    assert latency.severity is None
    assert monitor.figures(KEY)["latency_drifted"] == 0.0  # judged on these 100 calls, and not drifted


def test_failed_calls_without_confidence_do_not_switch_confidence_drift_off() -> None:
    monitor = DriftMonitor(DriftConfig())
    rng = np.random.default_rng(2)
    feed(monitor, traffic(4400, rng, error_rate=0.05))  # the reference holds failed calls (NaN) throughout
    assert "confidence_ks" in monitor.figures(KEY)  # judged, not skipped
    drop = traffic(600, rng, error_rate=0.05)
    drop["confidence"] *= 0.9
    assert calls_until_firing(feed(monitor, drop), "confidence") <= 500


def test_confidence_drift_clears_within_a_hundred_calls_of_recovery_not_a_whole_window_later() -> None:
    monitor = DriftMonitor(DriftConfig())
    rng = np.random.default_rng(8)
    feed(monitor, traffic(4400, rng))
    drop = traffic(600, rng)
    drop["confidence"] *= 0.7

    def dropped(observations: list[Observation]) -> bool:
        return any(o.rule == "confidence_drift" and o.severity is not None for o in observations)

    assert dropped(feed(monitor, drop)[-1])
    recovered = feed(monitor, traffic(600, rng))
    clear_after = next(10 * (k + 1) for k, obs in enumerate(recovered) if not dropped(obs))
    assert clear_after <= 2 * DriftConfig().recent_size
    assert not any(dropped(obs) for obs in recovered[clear_after // 10 :])
    assert monitor.state.get(KEY).mean.percent_change() < -DriftConfig().confidence_warning_pct  # the window alone
    # would still read a drop: it forgets the shift only ~400 calls after recovery


@pytest.mark.parametrize(("feature", "factor"), [("confidence", 0.9), ("latency", 1.5)])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_real_shift_fires_within_one_block(feature: str, factor: float, seed: int) -> None:
    """Confidence mean -10 % or every call 1.5x slower, from an arbitrary call on: an alert within 500 calls."""
    config = DriftConfig()
    monitor = DriftMonitor(config)
    rng = np.random.default_rng(seed)
    before = int(rng.integers(4300, 5200))
    calls = traffic(before + config.block_size, rng)
    calls[feature][before:] *= factor
    batches = feed(monitor, calls, batch=1)
    assert not any(firing(obs, f) for obs in batches[:before] for f in FEATURES)
    assert calls_until_firing(batches[before:], feature, batch=1) <= config.block_size


def test_a_day_of_unchanged_traffic_never_fires() -> None:
    monitor = DriftMonitor(DriftConfig())
    batches = feed(monitor, traffic(86_400, np.random.default_rng(6)), batch=50)
    assert not any(o.severity for observations in batches for o in observations)
    assert {"confidence_ks", "latency_ks", "tokens_ks"} <= set(monitor.figures(KEY))


def test_a_workload_that_swings_within_its_reference_does_not_fire_when_it_swings_again() -> None:
    """Phases of short and long answers (as in the Azure conversation trace) are the series' normal."""
    rng = np.random.default_rng(7)
    phases = []
    for _ in range(8):  # 8 cycles of 700 ordinary calls then 300 calls of one short-answer batch job
        ordinary, batch_job = traffic(700, rng), traffic(300, rng)
        batch_job["tokens"] = np.full(300, 430.0) + rng.integers(0, 20, 300)
        batch_job["latency"] = (0.3 + 0.0016 * 90) * rng.lognormal(0.0, 0.3, 300)
        phases += [ordinary, batch_job]
    calls = {name: np.concatenate([p[name] for p in phases]) for name in FEATURES}
    monitor = DriftMonitor(DriftConfig())
    batches = feed(monitor, calls)
    assert not any(o.severity for observations in batches for o in observations)
    # the same job against a reference that never saw it is drift: the swing is not ignored, it is learnt
    fresh = DriftMonitor(DriftConfig())
    ordinary = traffic(4500, rng)
    job = {name: column[-300:].copy() for name, column in phases[1].items()}
    tail = feed(fresh, {name: np.concatenate([ordinary[name], job[name]]) for name in FEATURES})
    assert any(firing(observations, "tokens") for observations in tail)


def test_nothing_is_judged_below_min_current_values() -> None:
    monitor = DriftMonitor(DriftConfig(reference_size=500, block_size=500, min_current=200))
    rng = np.random.default_rng(8)
    feed(monitor, traffic(520, rng, error_rate=0.0))
    assert "latency_psi" not in monitor.figures(KEY)  # 20 calls past the reference: no look yet
    feed(monitor, traffic(200, rng, error_rate=0.0))
    assert monitor.figures(KEY)["latency_psi"] >= 0.0


@pytest.mark.parametrize("sizes", [[4_000, 2_345], [1_200, 37, 2_900, 999, 611], [6_345]])
def test_a_batch_judges_its_last_look_as_look_by_look_updates_would(sizes: list[int]) -> None:
    """Only a batch's last look is judged (an earlier verdict would be replaced unread): after every batch each
    feature's state and verdict equal those of the same values fed one look at a time, every look judged."""
    config = DriftConfig(reference_size=2_000, block_size=500)
    rng = np.random.default_rng(12)
    calls = traffic(sum(sizes), rng)
    calls["latency"][3_000:] *= 3  # a shift after the reference: verdicts that change from look to look
    batched, look_by_look = SeriesDrift(config), SeriesDrift(config)
    judged = 0
    at = 0
    for size in sizes:
        part = {name: column[at : at + size] for name, column in calls.items()}
        batched.update(part)
        for lo in range(at, at + size, config.look_size):
            look_by_look.update({name: column[lo : min(lo + config.look_size, at + size)]
                                 for name, column in calls.items()})
        at += size
        for feature in FEATURES:  # (the confidence mean is kept per batch, so only the features compare)
            assert batched.features[feature].to_bytes() == look_by_look.features[feature].to_bytes()
            assert batched.features[feature].verdict == look_by_look.features[feature].verdict
        judged += batched.features["latency"].verdict is not None
    assert judged and batched.features["latency"].verdict.drifted  # type: ignore[union-attr]


def test_state_round_trips_mid_reference_and_mid_window() -> None:
    config = DriftConfig(reference_size=1000, block_size=300)
    rng = np.random.default_rng(9)
    for first in (650, 1450):  # reference still filling / complete with a window part-filled
        calls = traffic(first + 700, rng)
        live, split = SeriesDrift(config), SeriesDrift(config)
        head = {name: column[:first] for name, column in calls.items()}
        tail = {name: column[first:] for name, column in calls.items()}
        live.update(head)
        split.update(head)
        restored = SeriesDrift.from_bytes(split.to_bytes(), config)
        assert restored.to_bytes() == split.to_bytes()
        live.update(tail)
        restored.update(tail)
        assert restored.to_bytes() == live.to_bytes()
        for feature in FEATURES:
            assert restored.features[feature].verdict == live.features[feature].verdict
        assert restored.mean.percent_change() == live.mean.percent_change()


def test_the_monitor_restores_from_drained_state() -> None:
    monitor = DriftMonitor(DriftConfig(reference_size=500, block_size=200))
    feed(monitor, traffic(900, np.random.default_rng(10)))
    drained = dict(monitor.state.drain())
    restored = DriftMonitor(DriftConfig(reference_size=500, block_size=200))
    restored.state.restore(KEY, drained[KEY])
    assert restored.figures(KEY) == monitor.figures(KEY)
    assert [o.severity for o in restored.observe(KEY, 1, force=True)] == [
        o.severity for o in monitor.observe(KEY, 1, force=True)]


def _first_format(mean: MeanDrift, references: dict[str, BinnedDistribution]) -> bytes:
    """The bytes SeriesDrift wrote before reference windows and size classes (header, mean, 3 x 3 blocks)."""
    import struct

    blob = mean.to_bytes()
    parts = [struct.pack("<qI", 120, len(blob)), blob]
    for block in (references, *({f: BinnedDistribution(_EDGES[f]) for f in FEATURES} for _ in range(2))):
        for feature in FEATURES:
            data = block[feature].to_bytes()
            parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


def test_state_written_by_the_previous_version_still_restores() -> None:
    rng = np.random.default_rng(11)
    calls = traffic(700, rng)
    mean = MeanDrift(500, 500, 100)
    mean.update(calls["confidence"][~np.isnan(calls["confidence"])])
    references = {f: BinnedDistribution(_EDGES[f]) for f in FEATURES}
    for f in FEATURES:
        references[f].update(calls[f][:500])
    config = DriftConfig(reference_size=500, block_size=500)
    restored = SeriesDrift.from_bytes(_first_format(mean, references), config)
    assert restored.mean.percent_change() == mean.percent_change()
    tokens, confidence = restored.features["tokens"], restored.features["confidence"]
    assert tokens.frozen and tokens.reference_count == 500
    # confidence skipped failed calls, so the old reference never reached 500 (and was never judged): it fills up
    assert not confidence.frozen and confidence.reference_count == references["confidence"].total < 500
    assert not restored.features["latency"].frozen  # it had no size classes: its reference starts over
    restored.update(traffic(300, rng))
    assert tokens.verdict is not None and confidence.frozen
    assert SeriesDrift.from_bytes(restored.to_bytes(), config).to_bytes() == restored.to_bytes()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DriftConfig(alpha=0.0)
    with pytest.raises(ValueError):
        DriftConfig(looks_per_block=0)
    assert DriftConfig().look_alpha == pytest.approx(0.001 / 15)


@pytest.mark.parametrize("seed", range(6))
def test_the_timer_judging_only_changed_or_held_series_reports_what_judging_every_series_would(seed: int) -> None:
    """``observe_all`` skips series judged with nothing to say and unchanged since; through shifts that fire,
    incidents opening and closing on quiet series, rebaselines, eviction and a restore, it reports exactly what
    observing every series (forced) reports, and the kept ``figures`` are the computed ones."""
    rng = np.random.default_rng(seed)
    config = DriftConfig(reference_size=300, block_size=100, min_current=50, recent_size=20)
    monitor = DriftMonitor(config)
    keys = [f"svc-{i}\x1fmodel-{i % 2}" for i in range(8)]
    shifted: set[str] = set()
    open_rules: dict[tuple[tuple[str, str], ...], frozenset[str]] = {}
    offset, now = 0, 1_700_000_000_000
    fired = skipped = 0
    snapshots: dict[str, bytes] = {}
    for step in range(150):
        if step == 80:  # references filled by now: three series shift
            shifted.update(keys[:3])
        action = rng.random()
        if action < 0.6:
            chosen = sorted(set(rng.choice(keys, size=int(rng.integers(1, 4))).tolist()))
            n = int(rng.integers(20, 150))
            inverse = rng.integers(0, len(chosen), n)
            calls = traffic(n, rng)
            for i, key in enumerate(chosen):
                if key in shifted:
                    calls["confidence"][inverse == i] *= 0.6
                    calls["latency"][inverse == i] *= 3.0
            offset += 1
            monitor.update(chosen, inverse, calls, offset, now)
        elif action < 0.7:  # an incident opens or closes on some series, quiet or not
            service, model = rng.choice(keys).split("\x1f")
            labels = tuple(sorted((("service", service), ("model", model),
                                   *((("feature", "latency"),) if rng.random() < 0.5 else ()))))
            rule = "distribution_drift" if len(labels) == 3 else "confidence_drift"
            if labels in open_rules:
                del open_rules[labels]
            else:
                open_rules[labels] = frozenset({rule})
        elif action < 0.75:
            monitor.rebaseline(str(rng.choice(keys)), str(rng.choice(FEATURES)), now)
        elif action < 0.8:
            monitor.evict(now, 200_000)
        elif action < 0.85:  # a series' state taken now, or an earlier one restored (as after a reassignment)
            key = str(rng.choice(keys))
            state = monitor.state.get(key)
            if key in snapshots and rng.random() < 0.5:
                monitor.restore(key, b"\x00" * 8 + snapshots.pop(key))
            elif state is not None:
                snapshots[key] = state.to_bytes()
        now += int(rng.choice([1_000, 5_000, 30_000]))
        every = [obs for key in monitor.series() for obs in monitor.observe(key, now, force=True,
                                                                             open_rules=open_rules)]
        skipped += len(monitor._settled)
        assert monitor.observe_all(now, open_rules) == every
        fired += sum(obs.severity is not None for obs in every)
        for key in keys:
            assert monitor.figures(key) == monitor._computed_figures(key)
    assert fired and skipped  # the history fired, and series were skipped


def _natural_look_by_look(cells: np.ndarray, config: DriftConfig, classes: int, bins: int) -> float:
    """The natural variation as defined: at every look while the reference fills (each ``look_size`` values, up to
    the look that completes it), the KS distance between the window (the latest ``looks_per_block`` looks' values)
    and the reference values before it, once both hold ``block_size``; the largest. Computed afresh at each look
    from the series' whole stream of cells, with no ring."""
    size, ring, natural = config.look_size, config.looks_per_block, 0.0
    look = 1
    while look * size <= cells.size and (look - 1) * size < config.reference_size:
        settled_end = max(0, look - ring) * size
        reference = np.bincount(cells[:settled_end], minlength=classes * bins).reshape(classes, bins)
        window = np.bincount(cells[settled_end : look * size], minlength=classes * bins).reshape(classes, bins)
        if reference.sum() >= config.block_size and window.sum() >= config.block_size:
            if classes > 1:
                offsets = size_offsets(reference)
                reference, window = residual_counts(reference, offsets), residual_counts(window, offsets)
            else:
                reference, window = reference[0], window[0]
            natural = max(natural, ks_counts(reference, window).statistic)
        look += 1
    return natural


@pytest.mark.parametrize("seed", range(4))
def test_the_natural_variation_of_series_fed_together_in_batches_is_the_one_defined_look_by_look(seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = DriftConfig(reference_size=1500, block_size=200, looks_per_block=int(rng.integers(2, 6)))
    monitor, keys = DriftMonitor(config), [f"svc-{i}\x1fgpt-4o" for i in range(3)]
    streams: dict[str, list[dict[str, np.ndarray]]] = {key: [] for key in keys}
    offset = 0
    while min(sum(len(part["latency"]) for part in streams[key]) for key in keys) < 1800:
        n = int(rng.integers(1, 700))
        inverse = rng.integers(0, len(keys), n)
        calls = traffic(n, rng)
        calls["latency"] *= np.where(rng.random(n) < 0.3, 2.0, 1.0) ** (offset % 3)  # the mix swings a little
        offset += 1
        monitor.update(keys, inverse, calls, offset)
        for s, key in enumerate(keys):
            streams[key].append({name: column[inverse == s] for name, column in calls.items()})
    measured = 0
    for key in keys:
        whole = {name: np.concatenate([part[name] for part in streams[key]]) for name in FEATURES}
        cells = batch_cells(whole["confidence"], whole["latency"], whole["tokens"])
        state = dict(monitor.state.items())[key]
        for feature in FEATURES:
            drift = state.features[feature]
            classes, bins = drift.reference.shape
            expected = _natural_look_by_look(cells[feature][cells[feature] >= 0], config, classes, bins)
            assert drift.frozen
            assert drift.natural == expected  # bit for bit
            measured += expected > 0
    assert measured == len(keys) * len(FEATURES)

