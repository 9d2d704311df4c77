"""Fit the simulator's traffic parameters to real request traces; writes ``data/traffic_model.json`` beside it.

    python -m llmpulse.producers.simulation.derive_traffic_model [--traces DIR] [--out FILE]

Reads whichever of these are in ``DIR`` (see trace_replay.py for the formats and data/traces/SOURCES.md for
their provenance): ``AzureLLMInferenceTrace_code.csv``, ``AzureLLMInferenceTrace_conv.csv``,
``conversation_trace.jsonl`` (Mooncake). Only fitted numbers are written; no trace row is copied.

Per workload:

- arrivals: mean rate per minute, the coefficient of variation of inter-arrival gaps (1 for Poisson) and of
  per-minute counts (how much the rate itself wanders);
- input and output tokens: a lognormal clipped to the observed [min, max], fitted by a grid search that
  matches the trace's mean first and its 10/25/50/75/90/95th percentiles as well as it then can. Token counts
  are not lognormal (Azure code prompts stop at ~7.4k, Mooncake outputs have mean < median), and a plain MLE of
  the logs misses the clipped mean by up to 23 %; the mean is what drives cost and load, so it wins;
- the correlation of log input and log output tokens;
- Mooncake only: how much of each prompt is a prefix already seen (512-token KV blocks), the basis of the
  simulated ``cached_tokens``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from pathlib import Path
from statistics import NormalDist
from typing import Any

from llmpulse.config import shared_data_dir
from llmpulse.producers.simulation.trace_replay import Trace, read_trace

DEFAULT_TRACES_DIR = shared_data_dir() / "traces"
DEFAULT_OUT = Path(__file__).parent / "data" / "traffic_model.json"
WORKLOAD_FILES = {
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "mooncake-conv": "conversation_trace.jsonl",
}
BLOCK_TOKENS = 512  # Mooncake's KV-cache block size
# A gap CV above this (Azure code: ~13, minutes-long silences) would starve the alert windows at demo rates.
MAX_GAP_CV = 3.0
FIT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
MEAN_WEIGHT = 10.0  # the mean drives cost and load, so it is matched first; quantiles shape the rest


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def clipped_lognormal_mean(mu: float, sigma: float, low: float, high: float) -> float:
    """E[min(max(X, low), high)] for X ~ LogNormal(mu, sigma), in closed form."""
    a, b = math.log(low), math.log(high)
    below = _phi((a - mu) / sigma)
    above = 1.0 - _phi((b - mu) / sigma)
    shifted = mu + sigma * sigma
    inside = math.exp(mu + sigma * sigma / 2.0) * (_phi((b - shifted) / sigma) - _phi((a - shifted) / sigma))
    return low * below + high * above + inside


def fit_tokens(values: list[int]) -> dict[str, float]:
    """Clipped-lognormal fit: the trace's mean, then its quantiles (see the module docstring)."""
    clean = sorted(max(v, 1) for v in values)
    low, high = float(clean[0]), float(clean[-1])
    mean = statistics.fmean(clean)
    targets = [(NormalDist().inv_cdf(q), math.log(_quantile(clean, q))) for q in FIT_QUANTILES]
    log_low, log_high = math.log(low), math.log(high)

    def loss(mu: float, sigma: float) -> float:
        fitted = clipped_lognormal_mean(mu, sigma, low, high)
        quantile_err = statistics.fmean(
            (min(max(mu + sigma * z, log_low), log_high) - target) ** 2 for z, target in targets
        )
        return MEAN_WEIGHT * math.log(fitted / mean) ** 2 + quantile_err

    # A coarse grid then a fine one around its best point: no optimiser dependency, and deterministic.
    centre = math.log(clean[len(clean) // 2])
    coarse = [(centre + 0.05 * i, 0.05 * j) for i in range(-30, 31) for j in range(1, 80)]
    mu, sigma = min(coarse, key=lambda p: loss(*p))
    fine = [(mu + 0.002 * i, sigma + 0.002 * j) for i in range(-25, 26) for j in range(-25, 26)]
    mu, sigma = min((p for p in fine if p[1] > 0), key=lambda p: loss(*p))
    return {
        "mu": round(mu, 4),
        "sigma": round(sigma, 4),
        "min": int(low),
        "max": int(high),
        "mean": round(mean, 2),
        "p50": _quantile(clean, 0.5),
        "p95": round(_quantile(clean, 0.95), 1),
        "fit_mean": round(clipped_lognormal_mean(mu, sigma, low, high), 2),
        "fit_p50": round(min(max(math.exp(mu), low), high), 1),
        "fit_p95": round(min(max(math.exp(mu + sigma * NormalDist().inv_cdf(0.95)), low), high), 1),
    }


def _quantile(values: list[int], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    ordered = values
    position = q * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean > 0 else 0.0


def fit_arrivals(offsets_ms: list[float]) -> dict[str, float]:
    span_min = (offsets_ms[-1] - offsets_ms[0]) / 60_000.0
    gaps = [b - a for a, b in itertools.pairwise(offsets_ms)]
    minutes = [0] * (int(span_min) + 1)
    for offset in offsets_ms:
        minutes[int((offset - offsets_ms[0]) // 60_000)] += 1
    full_minutes = minutes[:-1] or minutes  # the last minute is partial
    return {
        "requests": len(offsets_ms),
        "span_min": round(span_min, 3),
        "rate_per_min": round(len(offsets_ms) / span_min, 3),
        "gap_cv": round(_cv(gaps), 4),
        "minute_cv": round(_cv([float(m) for m in full_minutes]), 4),
    }


def _log_correlation(xs: list[int], ys: list[int]) -> float:
    lx = [math.log(max(x, 1)) for x in xs]
    ly = [math.log(max(y, 1)) for y in ys]
    return round(statistics.correlation(lx, ly), 4)


def prefix_reuse(trace: Trace) -> dict[str, float]:
    """Share of prompts whose leading KV blocks were seen before, and the mean fraction of tokens they cover."""
    seen: set[int] = set()
    fractions = []
    for blocks, tokens in zip(trace.prefix_blocks, trace.input_tokens, strict=True):
        reused = 0
        for block in blocks:  # only a contiguous prefix can be served from the cache
            if block not in seen:
                break
            reused += 1
        seen.update(blocks)
        fractions.append(min(1.0, reused * BLOCK_TOKENS / max(tokens, 1)))
    hits = [f for f in fractions if f > 0]
    return {
        "share": round(len(hits) / len(fractions), 4),
        "fraction": round(statistics.fmean(hits), 4) if hits else 0.0,
    }


def fit_workload(trace: Trace) -> dict[str, Any]:
    fitted: dict[str, Any] = {
        "file": Path(trace.path).name,
        "skipped_rows": trace.skipped,
        **fit_arrivals(trace.offsets_ms),
        "input_tokens": fit_tokens(trace.input_tokens),
        "output_tokens": fit_tokens(trace.output_tokens),
        "log_corr": _log_correlation(trace.input_tokens, trace.output_tokens),
    }
    if trace.prefix_blocks:
        fitted["prefix_cache"] = prefix_reuse(trace)
    return fitted


def derive(traces_dir: Path) -> dict[str, Any]:
    """Fit every workload whose file is present; ValueError when none is."""
    workloads = {}
    for name, filename in WORKLOAD_FILES.items():
        path = traces_dir / filename
        if path.is_file():
            workloads[name] = fit_workload(read_trace(path, keep_blocks=True))
    if not workloads:
        raise ValueError(f"no trace file of {sorted(WORKLOAD_FILES.values())} in {traces_dir}")
    total_rate = sum(w["rate_per_min"] for w in workloads.values())
    weighted_cv = sum(w["rate_per_min"] * w["gap_cv"] for w in workloads.values()) / total_rate
    return {
        "derived_by": "python -m llmpulse.producers.simulation.derive_traffic_model",
        "total_rate_per_min": round(total_rate, 3),
        "burstiness": {
            "weighted_gap_cv": round(weighted_cv, 4),
            "arrival_gap_cv": round(min(weighted_cv, MAX_GAP_CV), 4),
        },
        "workloads": workloads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES_DIR, help="directory holding the traces")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the fitted parameters")
    args = parser.parse_args(argv)
    try:
        fitted = derive(args.traces)
    except ValueError as exc:
        print(f"derive_traffic_model: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fitted, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({', '.join(fitted['workloads'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
