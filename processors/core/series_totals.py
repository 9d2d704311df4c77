"""Per-batch aggregates for the Prometheus exporter: one row per series, computed with bincount.

The exporter then touches each label child once per batch instead of once per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.columns import DENIED, STATUSES, CallColumns

SECONDS_BUCKETS = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0])


@dataclass(frozen=True, slots=True)
class SeriesTotals:
    series: tuple[str, str, str]  # service, model, provider
    status_counts: np.ndarray  # per STATUSES
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_micros: int
    cache_hits: int
    no_answer: int
    latency_buckets: np.ndarray  # non-cumulative counts per SECONDS_BUCKETS (+Inf last)
    latency_sum_s: float
    ttft_buckets: np.ndarray
    ttft_sum_s: float
    errors_by_type: dict[str, int]


def _grouped_buckets(groups: np.ndarray, values_s: np.ndarray, n_groups: int) -> np.ndarray:
    """Non-cumulative bucket counts per group (rows), one bincount over (group, bucket)."""
    width = len(SECONDS_BUCKETS) + 1
    index = groups * width + np.searchsorted(SECONDS_BUCKETS, values_s, side="left")
    return np.bincount(index, minlength=n_groups * width).reshape(n_groups, width)


def _errors_by_series(error_type: np.ndarray, inverse: np.ndarray, failed: np.ndarray) -> dict[int, dict[str, int]]:
    """Failed calls per (series, error type), sorted by type; one pass over the failed calls only."""
    out: dict[int, dict[str, int]] = {}
    for s, kind in zip(inverse[failed].tolist(), error_type[failed].tolist(), strict=True):
        counts = out.setdefault(s, {})
        name = kind or "unknown"
        counts[name] = counts.get(name, 0) + 1
    return {s: dict(sorted(counts.items())) for s, counts in out.items()}


def _int_sums(inverse: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Exact integer sums per group (bincount would go through float64, which money must not)."""
    out = np.zeros(n, dtype=np.int64)
    np.add.at(out, inverse, values.astype(np.int64))
    return out


def totals_by_series(
    calls: CallColumns, keys: list[tuple[str, str, str]], inverse: np.ndarray, cost_micros: np.ndarray
) -> list[SeriesTotals]:
    """Totals per series of one batch; ``cost_micros`` is the priced cost (NO_COST already resolved)."""
    n_series = len(keys)
    weights = {
        "input": calls.input_tokens,
        "output": calls.output_tokens,
        "cached": calls.cached_tokens,
        "cost": np.maximum(cost_micros, 0),
        "hits": calls.cache_hit,
        "no_answer": calls.no_answer,
    }
    sums = {name: _int_sums(inverse, w, n_series) for name, w in weights.items()}
    status = np.zeros((n_series, len(STATUSES)), dtype=np.int64)
    np.add.at(status, (inverse, calls.status.astype(np.int64)), 1)
    latency_s = calls.latency_ms / 1000.0
    ttft_s = calls.ttft_ms / 1000.0
    sent = calls.status != DENIED  # a call the SDK denied has no latency and is no provider error
    failed = (calls.status != 0) & sent
    # one bincount per figure over (series, bucket), never a mask per series
    latency_buckets = _grouped_buckets(inverse[sent], latency_s[sent], n_series)
    timed = sent & ~np.isnan(latency_s)
    latency_sums = np.bincount(inverse[timed], weights=latency_s[timed], minlength=n_series)
    latency_nan = np.bincount(inverse[sent & ~timed], minlength=n_series) > 0  # a NaN latency sums to NaN
    has_ttft = sent & ~np.isnan(ttft_s)
    ttft_buckets = _grouped_buckets(inverse[has_ttft], ttft_s[has_ttft], n_series)
    ttft_sums = np.bincount(inverse[has_ttft], weights=ttft_s[has_ttft], minlength=n_series)
    errors_by_series = _errors_by_series(calls.error_type, inverse, failed)
    out = []
    for s, key in enumerate(keys):
        out.append(
            SeriesTotals(
                series=key,
                status_counts=status[s],
                input_tokens=int(sums["input"][s]),
                output_tokens=int(sums["output"][s]),
                cached_tokens=int(sums["cached"][s]),
                cost_micros=int(sums["cost"][s]),
                cache_hits=int(sums["hits"][s]),
                no_answer=int(sums["no_answer"][s]),
                latency_buckets=latency_buckets[s],
                latency_sum_s=float("nan") if latency_nan[s] else float(latency_sums[s]),
                ttft_buckets=ttft_buckets[s],
                ttft_sum_s=float(ttft_sums[s]),
                errors_by_type=errors_by_series.get(s, {}),
            )
        )
    return out
