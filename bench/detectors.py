"""Per-event cost of the guards and of drift tracking, and our binned KS against scipy's exact test.

Guards run on the texts of realistic calls in groups of 50 (the text-carrying tenth of a 500-call record).
Drift runs ``DriftMonitor.update`` on decoded records grouped by (service, model) as the engine groups them.
KS: ``ks_2samp`` on raw samples (500 reference, 1,000 current) against ``BinnedDistribution`` updates plus
``ks_statistic`` on the worker's latency bins, over the same samples; also the largest gap between the two
statistics. Detector accuracy (injection by length bucket, PII per kind) and the guard's cost on one 2 kB
prompt: ``bench.detector_accuracy``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bench import dataset, detector_accuracy
from bench.common import GroupResult, Scale, alternating, medians, now_ms
from bench.throughput import build_decoder
from llmpulse.processors import configure, loaders
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.drift import BinnedDistribution, ks_statistic, log_edges
from llmpulse.processors.core.drift_monitor import DriftMonitor
from llmpulse.processors.core.guards.guard import TextGuard
from llmpulse.processors.core.slots import series_key
from llmpulse.processors.settings import ProcessorSettings

GUARD_GROUP = 50
KS_REFERENCE, KS_CURRENT, KS_TESTS = 500, 1_000, 200
LATENCY_EDGES = log_edges(0.01, 600.0, 100)  # the drift monitor's latency bins


def guard_us_per_event(prompts: np.ndarray, responses: np.ndarray) -> float:
    guard = TextGuard(configure.guarding_config(ProcessorSettings()).guard, loaders.read_injection_model())
    started = time.perf_counter()
    for start in range(0, len(prompts), GUARD_GROUP):
        guard.check_batch(prompts[start : start + GUARD_GROUP], responses[start : start + GUARD_GROUP])
    return (time.perf_counter() - started) / len(prompts) * 1e6


def drift_us_per_event(batches: list[CallColumns]) -> float:
    monitor = DriftMonitor(configure.engine_config(ProcessorSettings()).drift)
    grouped = []
    for calls in batches:  # grouping is the engine's work, shared by every monitor: not timed here
        keys, inverse = calls.group_by("service", "model")
        values = {"confidence": calls.confidence, "latency": calls.latency_ms / 1000.0,
                  "tokens": (calls.input_tokens + calls.output_tokens).astype(np.float64)}
        grouped.append(([series_key(key) for key in keys], inverse, values))
    started = time.perf_counter()
    for offset, (series, inverse, values) in enumerate(grouped):
        monitor.update(series, inverse, values, offset)
    return (time.perf_counter() - started) / sum(len(calls) for calls in batches) * 1e6


def ks_samples(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reference/current latency pairs, from no shift to a clear one."""
    pairs = []
    for shift in np.linspace(0.0, 0.5, KS_TESTS):
        pairs.append((rng.lognormal(0.0, 0.7, KS_REFERENCE), rng.lognormal(float(shift), 0.7, KS_CURRENT)))
    return pairs


def binned_ks(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    stats = []
    started = time.perf_counter()
    for reference, current in pairs:
        ref, cur = BinnedDistribution(LATENCY_EDGES), BinnedDistribution(LATENCY_EDGES)
        ref.update(reference)
        cur.update(current)
        stats.append(ks_statistic(ref, cur).statistic)
    return (time.perf_counter() - started) / len(pairs) * 1e6, stats


def scipy_ks(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    from scipy.stats import ks_2samp

    started = time.perf_counter()
    stats = [float(ks_2samp(reference, current).statistic) for reference, current in pairs]
    return (time.perf_counter() - started) / len(pairs) * 1e6, stats


def run(scale: Scale) -> GroupResult:
    result = GroupResult()
    rows = dataset.realistic_rows(scale.detector_calls, seed=9)
    texts = [(r.get("prompt_text"), r.get("response_text")) for r in rows if r.get("prompt_text") or
             r.get("response_text")]
    prompts, responses = np.empty(len(texts), dtype=object), np.empty(len(texts), dtype=object)
    prompts[:], responses[:] = [p for p, _ in texts], [r for _, r in texts]
    decoder = build_decoder()
    batches = [decoder.decode(value, now_ms())[0] for _, value, _ in dataset.batch_records(rows)]
    batches = [calls for calls in batches if calls is not None]
    pairs = ks_samples(np.random.default_rng(13))
    variants: dict[str, Callable[[], float]] = {
        "guard": lambda: guard_us_per_event(prompts, responses),
        "drift": lambda: drift_us_per_event(batches),
        "ks_binned": lambda: binned_ks(pairs)[0],
    }
    try:
        scipy_ks(pairs[:2])
        variants["ks_scipy"] = lambda: scipy_ks(pairs)[0]
    except ImportError:  # scipy is a dev dependency only
        pass
    mid = medians(alternating(variants, scale.rounds))
    result.put("guard_us_per_event", mid["guard"],
               f"TextGuard.check_batch, {len(texts):,} calls with text in groups of {GUARD_GROUP}")
    result.put("drift_us_per_event", mid["drift"], f"DriftMonitor.update over {len(batches)} decoded records")
    result.put("ks_binned_us_per_test", mid["ks_binned"],
               f"{KS_REFERENCE} vs {KS_CURRENT} samples: 2 BinnedDistribution updates + ks_statistic")
    if "ks_scipy" in mid:
        _, exact = scipy_ks(pairs)
        _, binned = binned_ks(pairs)
        result.put("ks_scipy_us_per_test", mid["ks_scipy"], "scipy.stats.ks_2samp on the raw samples")
        result.put("ks_binned_speedup_vs_scipy", mid["ks_scipy"] / mid["ks_binned"])
        result.put("ks_stat_abs_diff_max", float(np.max(np.abs(np.subtract(binned, exact)))),
                   f"largest |D_binned - D_exact| over {KS_TESTS} pairs, shifts 0..0.5 in log-latency")
    result.merge(detector_accuracy.run())  # held-out injection and PII figures, guard cost per prompt
    return result
