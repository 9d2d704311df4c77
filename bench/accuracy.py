"""Percentile accuracy of ``LatencySketch`` against exact order statistics over a replayed trace.

Latencies come from the Azure LLM inference conversation trace's token counts (a prefill + per-token decode
model with lognormal noise) when the trace is present, else from a lognormal. Each closed 1-minute window
gets one sketch (``direct``) and, as the worker builds windows, six 10-second sketches merged (``merged``);
both are compared with ``np.quantile(method="lower")``, the order statistic the sketch promises to track.

Side by side, the convention users would otherwise rely on: Prometheus ``histogram_quantile`` (linear
interpolation inside the bucket holding the rank, the last finite bound for the +Inf bucket) over the same
windows counted into prometheus_client's default buckets, and into the LLM-tuned buckets the worker exports
(series_totals.SECONDS_BUCKETS).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.common import GroupResult
from llmpulse.processors.core.series_totals import SECONDS_BUCKETS
from llmpulse.processors.core.sketch import LatencySketch

PROMETHEUS_DEFAULT_BUCKETS = np.array([0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0])

QUANTILES = (0.5, 0.95, 0.99)
WINDOW_MS = 60_000
SLOT_MS = 10_000
TRACE = Path(os.environ.get("LLMPULSE_BENCH_TRACE", "/work/shared/data/traces/AzureLLMInferenceTrace_conv.csv"))


def trace_latencies(rng: np.random.Generator, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(arrival offsets ms, latency seconds, source description)."""
    if TRACE.exists():
        from llmpulse.producers.simulation.trace_replay import read_trace

        trace = read_trace(TRACE, limit=limit)
        offsets = np.asarray(trace.offsets_ms, dtype=np.float64)
        inputs = np.asarray(trace.input_tokens, dtype=np.float64)
        outputs = np.asarray(trace.output_tokens, dtype=np.float64)
        n = offsets.size
        prefill = 0.15 * rng.lognormal(0.0, 0.3, n) + inputs * 4e-5
        decode = outputs * 0.02 * rng.lognormal(0.0, 0.25, n)
        return offsets, prefill + decode, f"{TRACE.name} ({n:,} requests), latency from token counts"
    n = limit or 20_000
    offsets = np.sort(rng.uniform(0, 3_600_000, n))
    return offsets, rng.lognormal(0.0, 0.8, n), f"lognormal(0, 0.8), {n:,} calls over 1 h (trace absent)"


def window_errors(offsets: np.ndarray, latencies: np.ndarray, merged: bool) -> np.ndarray:
    """Relative errors (windows x quantiles) over every closed 1-minute window."""
    windows = (offsets // WINDOW_MS).astype(np.int64)
    closed = np.unique(windows)[:-1]  # the last window is still open when the replay ends
    errors = []
    for w in closed.tolist():
        values = latencies[windows == w]
        if values.size == 0:
            continue
        if merged:
            slots = (offsets[windows == w] // SLOT_MS).astype(np.int64)
            parts = []
            for slot in np.unique(slots).tolist():
                part = LatencySketch()
                part.add_many(values[slots == slot])
                parts.append(part)
            sketch = LatencySketch.merge_all(parts)
        else:
            sketch = LatencySketch()
            sketch.add_many(values)
        exact = np.quantile(values, QUANTILES, method="lower")
        errors.append(np.abs(sketch.quantiles(QUANTILES) - exact) / exact)
    return np.asarray(errors)


def histogram_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """Prometheus' histogram_quantile over non-cumulative ``counts`` per bucket (``bounds`` then +Inf)."""
    cumulative = np.cumsum(counts)
    rank = q * cumulative[-1]
    b = int(np.searchsorted(cumulative, rank, side="left"))
    if b >= bounds.size:  # the +Inf bucket: Prometheus answers the last finite bound
        return float(bounds[-1])
    lower = 0.0 if b == 0 else float(bounds[b - 1])
    below = 0.0 if b == 0 else float(cumulative[b - 1])
    inside = float(counts[b])
    return lower + (float(bounds[b]) - lower) * ((rank - below) / inside if inside else 0.0)


def histogram_errors(offsets: np.ndarray, latencies: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Relative errors (windows x quantiles) of histogram_quantile over ``bounds``, same windows as the sketch."""
    windows = (offsets // WINDOW_MS).astype(np.int64)
    errors = []
    for w in np.unique(windows)[:-1].tolist():
        values = latencies[windows == w]
        if values.size == 0:
            continue
        counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=bounds.size + 1)
        exact = np.quantile(values, QUANTILES, method="lower")
        estimate = np.array([histogram_quantile(q, bounds, counts) for q in QUANTILES])
        errors.append(np.abs(estimate - exact) / exact)
    return np.asarray(errors)


def run(limit: int | None = None) -> GroupResult:
    result = GroupResult()
    offsets, latencies, source = trace_latencies(np.random.default_rng(5), limit)
    direct = window_errors(offsets, latencies, merged=False)
    merged = window_errors(offsets, latencies, merged=True)
    result.put("percentile_rel_err_max", float(direct.max()),
               f"{source}; worst of p50/p95/p99 over {len(direct)} closed 1-min windows vs np.quantile(lower)")
    result.put("percentile_rel_err_max_merged", float(merged.max()), "same windows built from 10 s sketches merged")
    for key, bounds, name in (("prom_histogram_rel_err_max_default", PROMETHEUS_DEFAULT_BUCKETS,
                               "prometheus_client's default buckets (5 ms .. 10 s)"),
                              ("prom_histogram_rel_err_max_tuned", SECONDS_BUCKETS,
                               "the worker's LLM-tuned buckets (50 ms .. 30 s)")):
        errors = histogram_errors(offsets, latencies, bounds)
        worst = ", ".join(f"p{round(q * 100)} {errors[:, j].max():.3f}" for j, q in enumerate(QUANTILES))
        result.put(key, float(errors.max()), f"Prometheus histogram_quantile over {name}, same windows as "
                   f"percentile_rel_err_max; worst per quantile: {worst}")
    return result
