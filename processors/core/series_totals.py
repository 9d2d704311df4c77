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


def _bucket_counts(values_s: np.ndarray) -> np.ndarray:
    index = np.searchsorted(SECONDS_BUCKETS, values_s, side="left")
    return np.bincount(index, minlength=len(SECONDS_BUCKETS) + 1)


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
    out = []
    for s, key in enumerate(keys):
        member = inverse == s
        lat = latency_s[member & sent]
        ttft = ttft_s[member & sent]
        ttft = ttft[~np.isnan(ttft)]
        errors: dict[str, int] = {}
        if failed[member].any():
            types, counts = np.unique(
                np.array([t or "unknown" for t in calls.error_type[member & failed]], dtype=object),
                return_counts=True,
            )
            errors = dict(zip(types.tolist(), counts.tolist(), strict=True))
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
                latency_buckets=_bucket_counts(lat),
                latency_sum_s=float(lat.sum()),
                ttft_buckets=_bucket_counts(ttft),
                ttft_sum_s=float(ttft.sum()),
                errors_by_type=errors,
            )
        )
    return out
