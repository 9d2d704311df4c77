"""AI health score per service: one 0-100 figure from the signals the engines already keep.

Components, each a score in 0..1 over the last ``window_s`` (the traffic window, 5 min by default):

=========  ======  ===========================================================  ==============================
component  weight  measured                                                      threshold (setting)
=========  ======  ===========================================================  ==============================
latency    0.25    p95 and p99 of the service's calls (sketches merged over its   ``latency_p95_s`` 2 s,
                   models); the lower of the two scores                           ``latency_p99_s`` 5 s
errors     0.30    (errors + timeouts + rate limited) / requests                  ``error_ratio`` 0.05
drift      0.15    worst model: |confidence change| against its reference, and    ``drift_confidence_pct`` 10,
                   the PSI of every feature the drift detector judged drifted     ``drift_psi`` 0.2
guard      0.15    guard flags (injection, PII, toxic, hallucination) per call    ``guard_flag_ratio`` 0.01
quality    0.15    joined feedback: accuracy when calls carry correct/incorrect   ``quality_accuracy`` 0.80,
                   labels, else the mean score (as the quality alerts judge)      ``quality_mean_score`` 0.60
=========  ======  ===========================================================  ==============================

A component is 1 while its figure is within the threshold and falls linearly to 0 at ``zero_at`` (2) times the
threshold: ``1 - (x - T) / ((zero_at - 1) T)`` clipped to 0..1. For quality, where higher is better, the same
ramp applies to the shortfall ``1 - x`` against ``1 - T`` (accuracy 0.80 is 1, 0.60 is 0).

A component without its signal is *missing*, neither healthy nor unhealthy: latency, errors and guard need
``min_requests`` calls in the window, drift a judged model (a confidence reference or a feature verdict), quality
``min_ratings`` joined ratings. The score is ``100 x sum(w c) / sum(w)`` over the components present; a service
with no calls in the window, or no component present, has no score (None).

The thresholds default to the seed's alert warning levels (latency, errors, drift, quality) but are settings of
their own (``LLMPULSE_HEALTH__*``): moving an alert does not move the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from llmpulse.processors.core.drift_monitor import DriftConfig
from llmpulse.processors.core.latency import LatencyConfig, window_label
from llmpulse.processors.core.quality import QualityConfig
from llmpulse.processors.core.sketch_union import SketchUnion
from llmpulse.processors.core.slots import series_key, series_parts
from llmpulse.processors.core.traffic import INDEX, TrafficConfig

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llmpulse.processors.core.engine import PartitionEngine

# Each component's share of the score (renormalised over the components present); its keys are the components.
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"latency": 0.25, "errors": 0.30, "drift": 0.15, "guard": 0.15, "quality": 0.15})
COMPONENTS = tuple(DEFAULT_WEIGHTS)
GUARD_FLAGS = ("injection", "pii", "toxic", "hallucination")
DRIFT_FEATURES = ("confidence", "latency", "tokens")
_LATENCY, _TRAFFIC, _DRIFT, _QUALITY = LatencyConfig(), TrafficConfig(), DriftConfig(), QualityConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    window_s: int = _TRAFFIC.window_s
    latency_p95_s: float = _LATENCY.p95_warning_s
    latency_p99_s: float = _LATENCY.p99_critical_s
    error_ratio: float = _TRAFFIC.error_warning_ratio
    drift_confidence_pct: float = _DRIFT.confidence_warning_pct
    drift_psi: float = _DRIFT.psi_warning
    guard_flag_ratio: float = 0.01
    quality_accuracy: float = _QUALITY.accuracy_threshold
    quality_mean_score: float = _QUALITY.min_mean_score
    zero_at: float = 2.0  # a component reaches 0 at this multiple of its threshold
    min_requests: int = _LATENCY.min_samples
    min_ratings: int = _QUALITY.min_ratings
    # component -> weight, a component left out weighs 0. Kept read-only, and out of the hash (a mappingproxy has
    # none), so the frozen config stays immutable and hashable.
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS, hash=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(COMPONENTS))
        if unknown:  # a misspelt component would otherwise weigh nothing without a word
            raise ValueError(f"health weights for unknown components {unknown}: the components are {COMPONENTS}")
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def weight(self, component: str) -> float:
        return float(self.weights.get(component, 0.0))


class ServiceSignals(NamedTuple):
    """What one service showed over the window; NaN where a figure has no data."""

    requests: int = 0
    failed: int = 0
    latency_count: int = 0
    p95_s: float = math.nan
    p99_s: float = math.nan
    guard_flags: int = 0
    drift_judged: bool = False
    confidence_change_pct: float = math.nan  # the largest |change| over the service's models
    drifted_psi: float = math.nan  # the largest PSI among features judged drifted; NaN when none drifted
    ratings: int = 0
    accuracy: float = math.nan  # ratings-weighted over series with correct/incorrect labels
    mean_score: float = math.nan  # ratings-weighted over every rated series


@dataclass(frozen=True, slots=True)
class Component:
    score: float
    measured: dict[str, float]
    threshold: dict[str, float]


@dataclass(frozen=True, slots=True)
class HealthScore:
    score: float | None  # 0..100, None without traffic or without any component
    components: dict[str, Component | None] = field(default_factory=dict)  # None: missing (not counted)

    def as_dict(self) -> dict[str, Any]:
        return {"score": None if self.score is None else round(self.score, 1),
                "components": {name: None if c is None else
                               {"score": round(c.score, 4), "measured": {k: _finite(v) for k, v in c.measured.items()},
                                "threshold": c.threshold}
                               for name, c in self.components.items()}}


def ramp(value: float, threshold: float, zero_at: float = 2.0) -> float:
    """1 up to ``threshold``, linearly down to 0 at ``zero_at * threshold`` (lower values are better)."""
    if value <= threshold:
        return 1.0
    span = (zero_at - 1.0) * threshold
    return 0.0 if span <= 0 else float(min(max(1.0 - (value - threshold) / span, 0.0), 1.0))


def health_score(signals: ServiceSignals, config: HealthConfig) -> HealthScore:
    """The score and its components (see the module docstring)."""
    if signals.requests <= 0:
        return HealthScore(None, dict.fromkeys(COMPONENTS))
    c, z = config, config.zero_at
    found: dict[str, Component | None] = dict.fromkeys(COMPONENTS)
    if signals.latency_count >= c.min_requests and not math.isnan(signals.p95_s):
        found["latency"] = Component(
            min(ramp(signals.p95_s, c.latency_p95_s, z), ramp(signals.p99_s, c.latency_p99_s, z)),
            {"p95_s": signals.p95_s, "p99_s": signals.p99_s}, {"p95_s": c.latency_p95_s, "p99_s": c.latency_p99_s})
    if signals.requests >= c.min_requests:
        errors = signals.failed / signals.requests
        found["errors"] = Component(ramp(errors, c.error_ratio, z), {"error_ratio": errors},
                                    {"error_ratio": c.error_ratio})
        flags = signals.guard_flags / signals.requests
        found["guard"] = Component(ramp(flags, c.guard_flag_ratio, z), {"flags_per_call": flags},
                                   {"flags_per_call": c.guard_flag_ratio})
    if signals.drift_judged:
        change = abs(signals.confidence_change_pct)
        score = min(1.0 if math.isnan(change) else ramp(change, c.drift_confidence_pct, z),
                    1.0 if math.isnan(signals.drifted_psi) else ramp(signals.drifted_psi, c.drift_psi, z))
        found["drift"] = Component(score, {"confidence_change_pct": change, "drifted_psi": signals.drifted_psi},
                                   {"confidence_change_pct": c.drift_confidence_pct, "drifted_psi": c.drift_psi})
    if signals.ratings >= c.min_ratings:
        if not math.isnan(signals.accuracy):
            found["quality"] = Component(ramp(1.0 - signals.accuracy, 1.0 - c.quality_accuracy, z),
                                         {"accuracy": signals.accuracy}, {"accuracy": c.quality_accuracy})
        elif not math.isnan(signals.mean_score):
            found["quality"] = Component(ramp(1.0 - signals.mean_score, 1.0 - c.quality_mean_score, z),
                                         {"mean_score": signals.mean_score}, {"mean_score": c.quality_mean_score})
    present = [(c.weight(name), comp.score) for name, comp in found.items() if comp is not None]
    total = sum(w for w, _ in present)
    if not present or total <= 0:
        return HealthScore(None, found)
    return HealthScore(100.0 * sum(w * s for w, s in present) / total, found)


# ---- gathering the signals from engines (read-only views) ------------------------------------------------------
@dataclass(slots=True)
class _Spend:
    requests: int = 0
    cost_micros: int = 0

    def add(self, requests: int, cost_micros: int) -> None:
        self.requests += requests
        self.cost_micros += cost_micros

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cost_usd": self.cost_micros / 1e6,
                "cost_per_1k_requests_usd": cost_per_1k(self.cost_micros, self.requests)}


@dataclass(slots=True)
class _Service:
    totals: np.ndarray = field(default_factory=lambda: np.zeros(len(INDEX), dtype=np.int64))
    spend: _Spend = field(default_factory=_Spend)
    models: dict[str, _Spend] = field(default_factory=dict)
    drift_judged: bool = False
    change: float = math.nan
    drifted_psi: float = math.nan
    quality: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    latency_count: int = 0
    p95_s: float = math.nan
    p99_s: float = math.nan


def cost_per_1k(cost_micros: int, requests: int) -> float | None:
    """US dollars per 1,000 requests; None without requests."""
    return cost_micros / 1e6 * 1000.0 / requests if requests else None


def service_health(engines: Iterable[PartitionEngine], now_ms: int, config: HealthConfig) -> list[dict[str, Any]]:
    """Per service over ``config.window_s``: the health score with its components and the spend per 1,000 requests
    (also per model), summed over the given engines (a worker's partitions). Sorted by service.

    Read on columns: each engine's window totals of all its series at once (``TrafficMonitor.window_matrix``),
    and the latency of every service as the union of its series' windows (``SketchUnion``), whatever the
    number of engines holding them."""
    window = config.window_s
    services: dict[str, _Service] = {}
    owner_of: dict[str, int] = {}  # service -> its row in the union
    listed = []
    for engine in engines:
        series = sorted({*engine.latency.series(), *engine.traffic.series()})
        parts = [series_parts(key) for key in series]
        for service, _model, _provider in parts:
            if service not in owner_of:
                owner_of[service] = len(owner_of)
                services[service] = _Service()
        listed.append((engine, series, parts))
    union = SketchUnion(len(owner_of))
    service_totals = np.zeros((len(owner_of), len(INDEX)), dtype=np.int64)
    for engine, series, parts in listed:
        owners = [owner_of[service] for service, _model, _provider in parts]
        engine.latency.gather(union, owners, series, window, now_ms)
        totals = engine.traffic.window_matrix(series, window, now_ms)
        np.add.at(service_totals, owners, totals)
        requests = totals[:, INDEX["requests"]].tolist()
        cost = totals[:, INDEX["cost_micros"]].tolist()
        models_seen: set[tuple[str, str]] = set()
        for i, (service, model, _provider) in enumerate(parts):
            acc = services[service]
            acc.spend.add(requests[i], cost[i])
            acc.models.setdefault(model, _Spend()).add(requests[i], cost[i])
            if (service, model) not in models_seen:
                models_seen.add((service, model))
                _add_drift(acc, engine.drift.figures(series_key((service, model))))
        for row in engine.quality.figures(now_ms, rated_only=True):
            acc = services.get(row["service"])
            if acc is not None and row["ratings"]:
                acc.quality.append((row["ratings"], row["accuracy"], row["mean_score"]))
    counts = union.counts().tolist()
    tails = union.quantiles(np.tile((0.95, 0.99), (len(owner_of), 1))).tolist()
    for service, owner in owner_of.items():
        acc = services[service]
        acc.totals = service_totals[owner]
        acc.latency_count = counts[owner]
        acc.p95_s, acc.p99_s = tails[owner]
    out = []
    for service in sorted(services):
        acc = services[service]
        health = health_score(_signals(acc), config)
        out.append({"service": service, "window": window_label(window), **health.as_dict(),
                    **acc.spend.as_dict(),
                    "models": [{"model": m, **s.as_dict()} for m, s in sorted(acc.models.items())]})
    return out


def _add_drift(acc: _Service, figures: dict[str, Any]) -> None:
    change = figures.get("confidence_change_pct")
    if isinstance(change, float) and not math.isnan(change):
        acc.drift_judged = True
        acc.change = abs(change) if math.isnan(acc.change) else max(acc.change, abs(change))
    for feature in DRIFT_FEATURES:
        if f"{feature}_psi" not in figures:
            continue
        acc.drift_judged = True
        if figures.get(f"{feature}_drifted"):
            psi = float(figures[f"{feature}_psi"])
            acc.drifted_psi = psi if math.isnan(acc.drifted_psi) else max(acc.drifted_psi, psi)


def _signals(acc: _Service) -> ServiceSignals:
    t = acc.totals
    ratings = sum(n for n, _, _ in acc.quality)
    labelled = [(n, a) for n, a, _ in acc.quality if a is not None]
    scored = [(n, m) for n, _, m in acc.quality if m is not None]
    return ServiceSignals(
        requests=int(t[INDEX["requests"]]),
        failed=int(t[INDEX["errors"]] + t[INDEX["timeouts"]] + t[INDEX["rate_limited"]]),
        latency_count=acc.latency_count, p95_s=acc.p95_s, p99_s=acc.p99_s,
        guard_flags=int(sum(t[INDEX[name]] for name in GUARD_FLAGS)),
        drift_judged=acc.drift_judged, confidence_change_pct=acc.change, drifted_psi=acc.drifted_psi,
        ratings=ratings, accuracy=_weighted(labelled), mean_score=_weighted(scored),
    )


def _weighted(pairs: list[tuple[int, float]]) -> float:
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else math.nan


def _finite(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value
