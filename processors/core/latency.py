"""Latency and time-to-first-token percentiles per (service, model, provider) over sliding windows.

Values are kept in seconds in 1%-relative-error sketches, one per series per time slot (see slots.py).
Alert rules (seed 000): p95 over the alert window above ``p95_warning_s`` is WARNING, p99 above
``p99_critical_s`` is CRITICAL; nothing is judged on fewer than ``min_samples`` calls. A percentile breaches
only when more calls are over its threshold than a series whose true percentile sits exactly at the threshold
would show by chance (binomial tail below ``breach_alpha``), and never on fewer than ``min_breaching_calls``: on
60 calls the p99 is the slowest single call, and a timeout or two must not page as a latency incident.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.significance import breaching_calls_needed
from llmpulse.processors.core.sketch import LatencySketch
from llmpulse.processors.core.slots import SlotSeries, series_parts

QUANTILES = (0.5, 0.95, 0.99)
SERIES_LABELS = ("service", "model", "provider")


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyConfig:
    p95_warning_s: float = 2.0
    p99_critical_s: float = 5.0
    alert_window_s: int = 60
    windows_s: tuple[int, ...] = (60, 300, 3600)
    interval_s: int = 10
    min_samples: int = 20
    min_breaching_calls: int = 3
    breach_alpha: float = 0.001
    relative_accuracy: float = 0.01


def window_label(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


class LatencyMonitor:
    """Sketch windows for one partition's series; decisions as alert observations."""

    def __init__(self, config: LatencyConfig) -> None:
        self.config = config
        horizon = max(config.windows_s)

        def create() -> LatencySketch:
            return LatencySketch(config.relative_accuracy)

        self.latency = SlotSeries("latency", config.interval_s, horizon, create, LatencySketch.from_bytes)
        self.ttft = SlotSeries("ttft", config.interval_s, horizon, create, LatencySketch.from_bytes)

    def update(
        self,
        series: list[str],
        inverse: np.ndarray,
        timestamps_ms: np.ndarray,
        latency_ms: np.ndarray,
        ttft_ms: np.ndarray,
        offset: int,
        now_ms: int,
    ) -> None:
        """Add one batch; ``series[inverse[i]]`` is call i's series key."""
        slots = self.latency.slots_of(timestamps_ms)
        combined = inverse.astype(np.int64) * (1 << 40) + (slots - slots.min())
        groups, group_of = np.unique(combined, return_inverse=True)
        base = int(slots.min())
        seconds = latency_ms / 1000.0
        ttft_seconds = ttft_ms / 1000.0
        for g, code in enumerate(groups.tolist()):
            member = group_of == g
            key, slot = series[code >> 40], base + (code & ((1 << 40) - 1))
            sketch = self.latency.for_update(key, slot, offset, now_ms)
            if sketch is not None:
                sketch.add_many(seconds[member])
            ttft = ttft_seconds[member]
            ttft = ttft[~np.isnan(ttft)]
            if ttft.size:
                ttft_sketch = self.ttft.for_update(key, slot, offset, now_ms)
                if ttft_sketch is not None:
                    ttft_sketch.add_many(ttft)

    def window(self, series: str, window_s: int, now_ms: int, ttft: bool = False) -> LatencySketch:
        parts = (self.ttft if ttft else self.latency).window(series, window_s, now_ms)
        return LatencySketch.merge_all(parts) if parts else LatencySketch(self.config.relative_accuracy)

    def quantiles(self, series: str, window_s: int, now_ms: int) -> tuple[int, np.ndarray]:
        sketch = self.window(series, window_s, now_ms)
        return sketch.count, sketch.quantiles(QUANTILES)

    def observe(self, series: str, now_ms: int) -> list[Observation]:
        """p95 and p99 rule evaluations for one series over the alert window."""
        config = self.config
        sketch = self.window(series, config.alert_window_s, now_ms)
        count = sketch.count
        # the k-th slowest call must be over a threshold too, k from the binomial noise of that percentile
        ranks = [(count - breaching_calls_needed(count, tail, config.breach_alpha, config.min_breaching_calls))
                 / max(count - 1, 1) for tail in (0.05, 0.01)]
        _p50, p95, p99, guard95, guard99 = sketch.quantiles(
            (*QUANTILES, *(min(q, max(rank, 0.0)) for q, rank in zip((0.95, 0.99), ranks, strict=True)))
        ) if count else (np.nan,) * 5
        if count:  # more breaching calls needed than there are calls: nothing can breach
            guard95, guard99 = (g if rank >= 0 else np.nan for g, rank in zip((guard95, guard99), ranks, strict=True))
        labels = tuple(zip(SERIES_LABELS, series_parts(series), strict=True))
        window = window_label(config.alert_window_s)
        enough = count >= config.min_samples
        where = "/".join(series_parts(series))
        rules = (("latency_p95", "WARNING", p95, guard95, config.p95_warning_s),
                 ("latency_p99", "CRITICAL", p99, guard99, config.p99_critical_s))
        return [
            Observation(
                rule=rule,
                labels=labels,
                severity=severity if enough and min(value, guard) > threshold else None,
                observed=float(value) if enough else 0.0,
                threshold=threshold,
                window=window,
                summary=f"{rule[-3:]} latency {value:.2f}s over {window} for {where} (threshold {threshold:g}s)",
                now_ms=now_ms,
            )
            for rule, severity, value, guard, threshold in rules
        ]

    def series(self) -> list[str]:
        return self.latency.series()

    def restore(self, namespace: str, key: str, blob: bytes) -> bool:
        for slots in (self.latency, self.ttft):
            if slots.state.namespace == namespace:
                slots.restore(key, blob)
                return True
        return False

    def evict(self, now_ms: int) -> None:
        self.latency.evict(now_ms)
        self.ttft.evict(now_ms)

    def states(self) -> list:  # type: ignore[type-arg]
        return [self.latency.state, self.ttft.state]
