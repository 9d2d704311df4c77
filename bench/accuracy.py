"""Percentile accuracy of ``LatencySketch`` against exact order statistics over a replayed trace.

Latencies come from the Azure LLM inference conversation trace's token counts (a prefill + per-token decode
model with lognormal noise) when the trace is present, else from a lognormal. Each closed 1-minute window
gets one sketch (``direct``) and, as the worker builds windows, six 10-second sketches merged (``merged``);
both are compared with ``np.quantile(method="lower")``, the order statistic the sketch promises to track.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.common import GroupResult
from llmpulse.processors.core.sketch import LatencySketch

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


def run(limit: int | None = None) -> GroupResult:
    result = GroupResult()
    offsets, latencies, source = trace_latencies(np.random.default_rng(5), limit)
    direct = window_errors(offsets, latencies, merged=False)
    merged = window_errors(offsets, latencies, merged=True)
    result.put("percentile_rel_err_max", float(direct.max()),
               f"{source}; worst of p50/p95/p99 over {len(direct)} closed 1-min windows vs np.quantile(lower)")
    result.put("percentile_rel_err_max_merged", float(merged.max()), "same windows built from 10 s sketches merged")
    return result
