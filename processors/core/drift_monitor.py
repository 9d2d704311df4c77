"""Confidence drift (percent change of the mean) and distribution drift (KS, PSI) per (service, model).

Reference: the first ``reference_size`` observations of a series; current: the latest block (see
drift.MeanDrift for the mean, and two rotating blocks of binned counts for the distributions). KS runs on
fine bins, PSI on bins coarsened to ~10 (finer bins inflate PSI on small samples). Rules (seeds 000/003):
|mean confidence change| > 10% WARNING, > 15% CRITICAL; PSI > 0.2 ("significant") WARNING.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.drift import (
    BinnedDistribution,
    MeanDrift,
    ks_statistic,
    linear_edges,
    log_edges,
    psi,
    psi_band,
)
from llmpulse.processors.core.keyed_state import KeyedState
from llmpulse.processors.core.slots import series_parts

FEATURES = ("confidence", "latency", "tokens")
_EDGES = {
    "confidence": linear_edges(0.0, 1.0, 100),
    "latency": log_edges(0.01, 600.0, 100),
    "tokens": log_edges(1.0, 1_000_000.0, 100),
}
_HEADER = struct.Struct("<qI")  # rows in the filling block, length of the MeanDrift state


@dataclass(frozen=True, slots=True)
class DriftConfig:
    reference_size: int = 500
    block_size: int = 500
    min_current: int = 100
    confidence_warning_pct: float = 10.0
    confidence_critical_pct: float = 15.0
    psi_warning: float = 0.2
    psi_bins: int = 10
    evaluate_every_ms: int = 5_000  # KS/PSI cost ~0.3 ms per series: judge at most this often per series


class SeriesDrift:
    """Reference, previous and filling blocks of binned counts per feature, plus the confidence mean drift."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.mean = MeanDrift(config.reference_size, config.block_size, config.min_current)
        self.reference = {f: BinnedDistribution(_EDGES[f]) for f in FEATURES}
        self.previous = {f: BinnedDistribution(_EDGES[f]) for f in FEATURES}
        self.filling = {f: BinnedDistribution(_EDGES[f]) for f in FEATURES}
        self.filling_rows = 0

    def update(self, values: dict[str, np.ndarray]) -> None:
        confidence = values["confidence"]
        confidence = confidence[~np.isnan(confidence)]
        if confidence.size:
            self.mean.update(confidence)
        rows = len(values["latency"])
        start = 0
        while start < rows:  # reference fills first, then blocks rotate
            target = self.reference if self.reference["latency"].total < self.config.reference_size else self.filling
            room = self.config.reference_size - target["latency"].total if target is self.reference else (
                self.config.block_size - self.filling_rows)
            take = slice(start, start + max(1, room))
            for feature in FEATURES:
                chunk = values[feature][take]
                target[feature].update(chunk[~np.isnan(chunk)])
            if target is self.filling:
                self.filling_rows += len(values["latency"][take])
                if self.filling_rows >= self.config.block_size:
                    self.previous, self.filling = self.filling, {f: BinnedDistribution(_EDGES[f]) for f in FEATURES}
                    self.filling_rows = 0
            start = take.stop

    def current(self, feature: str) -> BinnedDistribution:
        merged = self.previous[feature].copy()
        merged.merge(self.filling[feature])
        return merged

    def to_bytes(self) -> bytes:
        mean = self.mean.to_bytes()
        parts = [_HEADER.pack(self.filling_rows, len(mean)), mean]
        for block in (self.reference, self.previous, self.filling):
            for feature in FEATURES:
                blob = block[feature].to_bytes()
                parts += [struct.pack("<I", len(blob)), blob]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes, config: DriftConfig) -> SeriesDrift:
        out = cls(config)
        rows, mean_len = _HEADER.unpack_from(blob, 0)
        offset = _HEADER.size
        out.mean = MeanDrift.from_bytes(blob[offset : offset + mean_len])
        offset += mean_len
        out.filling_rows = rows
        for block in (out.reference, out.previous, out.filling):
            for feature in FEATURES:
                (length,) = struct.unpack_from("<I", blob, offset)
                offset += 4
                block[feature] = BinnedDistribution.from_bytes(blob[offset : offset + length])
                offset += length
        return out


class DriftMonitor:
    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.state: KeyedState[SeriesDrift] = KeyedState(
            "drift", lambda _key: SeriesDrift(config), lambda blob: SeriesDrift.from_bytes(blob, config)
        )
        self._judged_at: dict[str, int] = {}

    def series(self) -> list[str]:
        return [key for key, _ in self.state.items()]

    def update(self, series: list[str], inverse: np.ndarray, values: dict[str, np.ndarray], offset: int) -> None:
        for s, key in enumerate(series):
            drift = self.state.for_update(key, offset)
            if drift is not None:
                member = inverse == s
                drift.update({name: column[member] for name, column in values.items()})

    def figures(self, key: str) -> dict[str, float | str]:
        drift = self.state.get(key)
        out: dict[str, float | str] = {}
        if drift is None:
            return out
        out["confidence_change_pct"] = drift.mean.percent_change()
        for feature in FEATURES:
            reference, current = drift.reference[feature], drift.current(feature)
            if reference.total < self.config.reference_size or current.total < self.config.min_current:
                continue
            ks = ks_statistic(reference, current)
            factor = max(1, len(reference.counts) // self.config.psi_bins)
            value = psi(reference.coarsen(factor), current.coarsen(factor))
            out[f"{feature}_ks"], out[f"{feature}_ks_p"] = ks.statistic, ks.p_value
            out[f"{feature}_psi"], out[f"{feature}_psi_band"] = value, psi_band(value)
        return out

    def observe(self, key: str, now_ms: int, force: bool = False) -> list[Observation]:
        """Drift rule evaluations for one series; at most once per ``evaluate_every_ms`` unless forced."""
        c = self.config
        if not force:  # forced (timer) judgements run on wall-clock time and must not throttle event-time ones
            if now_ms - self._judged_at.get(key, -c.evaluate_every_ms) < c.evaluate_every_ms:
                return []
            self._judged_at[key] = now_ms
        figures = self.figures(key)
        if not figures:
            return []
        service, model = series_parts(key)[:2]
        labels = (("service", service), ("model", model))
        change = float(figures.get("confidence_change_pct", float("nan")))
        severity = None
        if not np.isnan(change) and abs(change) > c.confidence_critical_pct:
            severity = "CRITICAL"
        elif not np.isnan(change) and abs(change) > c.confidence_warning_pct:
            severity = "WARNING"
        out = [Observation("confidence_drift", labels, severity, 0.0 if np.isnan(change) else change,
                           c.confidence_warning_pct, f"last {c.block_size} calls",
                           f"mean confidence changed {change:+.1f}% vs baseline for {service}/{model}", now_ms)]
        for feature in FEATURES:
            value = figures.get(f"{feature}_psi")
            if value is None:
                continue
            out.append(Observation(
                "distribution_drift", (*labels, ("feature", feature)),
                "WARNING" if float(value) > c.psi_warning else None, float(value), c.psi_warning,
                f"last {c.block_size} calls",
                f"{feature} distribution drifted for {service}/{model}: PSI {float(value):.3f} "
                f"({figures[f'{feature}_psi_band']}), KS {float(figures[f'{feature}_ks']):.3f} "
                f"(p={float(figures[f'{feature}_ks_p']):.2g})", now_ms,
            ))
        return out
