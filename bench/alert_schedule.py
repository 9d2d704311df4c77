"""A labelled schedule of incidents for the alert-quality benchmark, and their injection into fleet traffic.

A schedule is JSON lines, one injected incident each:

    {"kind": "latency-spike", "scope": "series", "start": "01:00", "duration": 600, "magnitude": 1.0}

- ``kind``: a simulator scenario (producers/simulation/scenarios.py); its injector edits the calls chosen here;
- ``scope``: ``series`` (one service/model/provider), ``model`` (one model across services) or ``provider``
  (one provider across models and services), optionally with a target: ``series:support-bot/gpt-4o``,
  ``model:gpt-4o``, ``provider:openai``; without one the seed picks it;
- ``start``: seconds from the start of the day, or ``"HH:MM[:SS]"``; ``duration``: seconds;
- ``magnitude``: a multiple of the scenario's default intensity: its share of the eligible calls, or its calls
  per second (a runaway job, an attacker), spread over the scope's services by their rates and taken from the
  scope's calls; a scope with fewer calls gets copies of its own calls added, so the rate is what was asked.

The injectors move calls to the scenario's own service or model in a few cases (budget, injection); here the
calls keep the scope's labels, so the incident happens where the schedule says. Spend scenarios spend at the
target's prices, so targets the seed picks for them are where their scenario aims (``pick_target``).
Each ``ab-regression`` runs its own experiment (``prompt-v2-<n>``): Welch statistics are cumulative, so a
second incident on one experiment would already be regressed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bench.alert_fleet import Series
from llmpulse.producers.simulation.scenarios import BUDGET_MODEL, COST_SERVICE, SCENARIOS, Scenario
from llmpulse.producers.simulation.traffic_model import CallBlock, TrafficModel

SCHEDULES = Path(__file__).parent / "schedules"
SCOPES = ("series", "model", "provider")
# kind -> the member rules that mean "this incident was seen" (tests/integration/test_scenario_alerts.py
# EXPECTED, plus error_rate for an outage: a series-wide outage need not open the fleet-wide circuit).
EXPECTED_RULES: dict[str, tuple[str, ...]] = {
    "latency-spike": ("latency_p95", "latency_p99"),
    "error-burst": ("error_rate",),
    "provider-outage": ("provider_circuit", "error_rate"),
    "cost-spike": ("cost_per_request",),
    "budget-exhaustion": ("budget", "budget_burn"),
    "confidence-drift": ("confidence_drift",),
    "ab-regression": ("ab_regression",),
    "injection-campaign": ("prompt_injection", "security_incident"),
    "hallucination": ("hallucination",),
    "pii-leak": ("pii_leak",),
    "quality-drop": ("quality_drop", "concept_drift"),
}
# Spend never un-happens and experiment statistics are cumulative: these incidents end with their period or go
# stale. A quality drop clears only on feedback showing recovery, and the replay's baseline calls get none.
NEVER_RESOLVE = frozenset({"budget-exhaustion", "ab-regression", "quality-drop"})
# The kinds whose detection delay the goal bounds at 60 s (drift is judged in windows, the rest is unbounded).
FAST_KINDS = ("latency-spike", "error-burst", "provider-outage", "budget-exhaustion", "injection-campaign")
# Which calls an injector may take; the scenarios' own tests also pin a service or model, the scope does here.
_ANY_CALL = frozenset({"budget-exhaustion", "injection-campaign"})
_NOT_CACHED = frozenset({"provider-outage", "ab-regression"})
_LABEL_COLUMNS = ("service", "request_model", "provider", "feature")


@dataclass(frozen=True, slots=True)
class Injected:
    """One labelled incident: what, where, when (seconds from the day's start) and how strong."""

    index: int
    kind: str
    scope: str
    target: str
    start_s: float
    duration_s: float
    magnitude: float = 1.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def label(self) -> str:
        return f"{self.kind}#{self.index}"

    @property
    def experiment(self) -> str:
        return f"prompt-v2-{self.index}"

    def covers(self, series: Series) -> bool:
        return covers(self.scope, self.target, series)


def covers(scope: str, target: str, series: Series) -> bool:
    if scope == "series":
        return f"{series.service}/{series.model}" == target
    return (series.model if scope == "model" else series.provider) == target


def _seconds(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    parts = [float(p) for p in str(value).split(":")]
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"start {value!r}: seconds or HH:MM[:SS]")
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0.0)


def load(path: Path, series: list[Series], rng: np.random.Generator) -> list[Injected]:
    """Parse a schedule file; targets left out are drawn with ``rng``; ValueError names the bad line."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
            kind = str(row["kind"])
            if kind not in SCENARIOS:
                raise ValueError(f"unknown kind {kind!r}; known: {', '.join(SCENARIOS)}")
            scope, _, target = str(row.get("scope", "series")).partition(":")
            if scope not in SCOPES:
                raise ValueError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
            target = target or pick_target(kind, scope, series, rng)
            if not any(covers(scope, target, s) for s in series):
                raise ValueError(f"{scope} {target!r} is not in the fleet")
            out.append(Injected(len(out), kind, scope, target, _seconds(row["start"]), float(row["duration"]),
                                float(row.get("magnitude", 1.0))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    return sorted(out, key=lambda i: i.start_s)


def pick_target(kind: str, scope: str, series: list[Series], rng: np.random.Generator) -> str:
    """A target in the fleet. Spend scenarios aim where their scenario does, as they spend at the target's
    prices: cost-spike at the series of its service (on gpt-4o-mini 50-90k-token prompts cost ~$0.01, under
    the $0.015/request rule), budget-exhaustion at its model."""
    pool = series
    if kind == "cost-spike":
        pool = [s for s in series if s.service == COST_SERVICE] or series
    elif kind == "budget-exhaustion":
        pool = [s for s in series if s.model == BUDGET_MODEL] or series
    chosen = pool[int(rng.integers(len(pool)))]
    return {"series": f"{chosen.service}/{chosen.model}", "model": chosen.model, "provider": chosen.provider}[scope]


class Injector:
    """Applies the schedule's incidents to each block of generated calls, as the simulator applies scenarios."""

    def __init__(self, model: TrafficModel, schedule: list[Injected], series: list[Series], day_start_ms: int) -> None:
        self.model, self.schedule, self.day_start_ms = model, schedule, day_start_ms
        self.rate_in_scope = {i.index: _rates_by_service(i, series) for i in schedule}  # calls/s per service
        self.scope_rate = {index: sum(rates.values()) for index, rates in self.rate_in_scope.items()}
        self.touched = dict.fromkeys((i.index for i in schedule), 0)

    def window_ms(self, incident: Injected) -> tuple[int, int]:
        return (self.day_start_ms + int(incident.start_s * 1000), self.day_start_ms + int(incident.end_s * 1000))

    def apply(self, block: CallBlock, t0_ms: int, t1_ms: int, rng: np.random.Generator) -> CallBlock:
        """Inject every incident live in [t0_ms, t1_ms) into ``block`` (one service's calls of that span); a
        block short of an absolute-rate incident's calls is returned with copies of its in-scope calls added."""
        for incident in self.schedule:
            start, end = self.window_ms(incident)
            lo, hi = max(start, t0_ms), min(end, t1_ms)
            if lo >= hi:
                continue
            scenario = SCENARIOS[incident.kind]
            inside = (block.timestamp_ms >= lo) & (block.timestamp_ms < hi) & (block.scenario == None)  # noqa: E711
            inside &= _in_scope(incident, block) & _eligible(incident.kind, block)
            if scenario.calls_per_s is None:
                share = min(1.0, scenario.share * incident.magnitude)
                rows = np.flatnonzero(inside & (rng.random(len(block)) < share))
            else:
                service_rate = self.rate_in_scope[incident.index].get(str(block.service[0]), 0.0)
                expected = scenario.calls_per_s * incident.magnitude * (hi - lo) / 1000.0
                wanted = int(rng.poisson(expected * service_rate / max(self.scope_rate[incident.index], 1e-9)))
                block, rows = _take(block, np.flatnonzero(inside), wanted, lo, hi, rng)
            if rows.size:
                self._inject(incident, scenario, block, rows, rng)
        return block

    def _inject(self, incident: Injected, scenario: Scenario, block: CallBlock, rows: np.ndarray,
                rng: np.random.Generator) -> None:
        kept = {name: getattr(block, name)[rows].copy() for name in _LABEL_COLUMNS}
        scenario.inject(self.model, block, rows, rng)
        for name, values in kept.items():  # the incident stays where the schedule put it
            getattr(block, name)[rows] = values
        if incident.kind == "budget-exhaustion":
            self.model.set_latency(block, rows, rng)  # the latency law of the model the calls keep
        if incident.kind == "ab-regression":
            block.experiment_id[rows] = incident.experiment
        block.scenario[rows] = incident.label
        self.touched[incident.index] += int(rows.size)


def _rates_by_service(incident: Injected, series: list[Series]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in series:
        if incident.covers(s):
            out[s.service] = out.get(s.service, 0.0) + s.rate
    return out


def _take(block: CallBlock, candidates: np.ndarray, wanted: int, lo_ms: int, hi_ms: int,
          rng: np.random.Generator) -> tuple[CallBlock, np.ndarray]:
    """``wanted`` of the candidate rows; when there are fewer, all of them plus copies stamped inside [lo, hi)."""
    if wanted <= candidates.size:
        return block, np.sort(rng.choice(candidates, wanted, replace=False))
    if not candidates.size:
        return block, candidates
    n, extra = len(block), wanted - candidates.size
    copies = rng.choice(candidates, extra)
    present = [f.name for f in fields(block) if getattr(block, f.name) is not None]  # optional columns may be absent
    columns = {name: np.concatenate([getattr(block, name), getattr(block, name)[copies]]) for name in present}
    columns["timestamp_ms"][n:] = rng.integers(lo_ms, hi_ms, extra)
    order = np.argsort(columns["timestamp_ms"], kind="stable")
    grown = CallBlock(**{name: values[order] for name, values in columns.items()})
    rows = np.flatnonzero(np.isin(order, np.concatenate([candidates, np.arange(n, n + extra)])))
    return grown, rows


def _in_scope(incident: Injected, block: CallBlock) -> np.ndarray:
    if incident.scope == "series":
        service, _, model = incident.target.partition("/")
        return (block.service == service) & (block.request_model == model)
    column = block.request_model if incident.scope == "model" else block.provider
    return column == incident.target


def _eligible(kind: str, block: CallBlock) -> np.ndarray:
    if kind in _ANY_CALL:
        return np.ones(len(block), dtype=bool)
    if kind in _NOT_CACHED:
        return ~block.cache_hit
    return (block.status == "ok") & ~block.cache_hit
