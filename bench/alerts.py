"""Alert quality: does a labelled day of incidents page once each, quickly, and a quiet day not at all?

    python -m bench.alerts --quick                    # ~3 h control + one incident per kind, a minute or two
    python -m bench.alerts --quick --control-hours 1 --schedule bench/schedules/smoke.jsonl  # a smoke run
    python -m bench.alerts --seed 7 --schedule bench/schedules/full.jsonl --json

Two simulated days replay in event time through the worker's alerting path in one process (alert_replay.py,
no Kafka, no wall-clock waits): a fleet of 8 services x 4 models x 2 providers and 500 users (alert_fleet.py)
at ``RATE`` calls/s, with default settings except budgets sized for the fleet (alert_budgets.py). The control
day has no incidents; the incident day follows a schedule (alert_schedule.py) that covers every simulator
scenario at three scopes (full) or once at one scope (quick). The two days and the drift figures run side by
side in three processes.
Both days start with ``WARMUP_S`` that is not judged (drift references fill, the first windows open).

Figures (scoring in alert_scoring.py): recall per kind, pages per injected incident and what they would have
been if every firing member alert paged (``member_firings_per_incident``), false pages per control day by
priority (quick scales its hours to a day), detection delay p50/p95 in event time, resolve delay after an
incident ends (budget and A/B regressions excluded: they do not resolve by design), and the two drift figures
of bench/drift_quality.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import alert_budgets, drift_quality
from bench.alert_fleet import (
    DEFAULT_RATE,
    PARTITIONS,
    Fleet,
    feedback_of,
    fleet_model,
    fleet_series,
    partition_of,
    to_columns,
)
from bench.alert_replay import TICK_MS, Log, Pipeline, describe_page
from bench.alert_schedule import FAST_KINDS, NEVER_RESOLVE, SCHEDULES, Injected, Injector, load
from bench.alert_scoring import (
    GRACE_S,
    Verdict,
    explained_pages,
    firings_by_priority,
    judge,
    pages_by_priority,
    pages_by_rule,
    quantiles,
)
from bench.common import GroupResult
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.producers.simulation.scenarios import SCENARIOS

DEFAULT_SEED = 13
RATE = DEFAULT_RATE
DAY_S = 24 * 3600.0
WARMUP_S = 1800.0
TAIL_S = 1200.0  # after the last incident of a schedule shorter than a day: time to resolve
DAY_START_MS = int(datetime(2025, 6, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday, mid-year, 00:00 UTC
DRAIN_EVERY_S = 600.0
FIGURES = (
    "alert_recall_min", "pages_per_incident", "member_firings_per_incident", "false_pages_p0p1_per_day",
    "false_pages_p2_per_day", "false_member_firings_p0p1_per_day", "false_member_firings_p2_per_day",
    "detect_delay_p50_s", "detect_delay_p95_s", "page_delay_p95_s", "drift_detect_windows_max", "resolve_delay_p95_s",
    "drift_false_per_100_series_days",
)
DETAILS = ("alert_recall_by_kind", "alert_quality_by_kind", "alert_quality_run")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    control_s: float  # judged control time, after the warm-up
    schedule: Path
    day_s: float | None  # incident day length; None: the schedule's last end + TAIL_S


QUICK = Variant("quick", 3 * 3600.0, SCHEDULES / "quick.jsonl", None)
FULL = Variant("full", DAY_S, SCHEDULES / "full.jsonl", DAY_S)


@dataclass(slots=True)
class Day:
    """What one replayed day emitted, and its size."""

    log: Log
    calls: int
    touched: dict[int, int]
    traffic_shape: str
    wall_s: float


def replay(settings: ProcessorSettings, seed: int, duration_s: float, schedule: Sequence[Injected]) -> Day:
    """Replay ``duration_s`` of fleet traffic (with ``schedule`` injected) through the pipeline in event time."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    fleet = Fleet(RATE, rng)
    injector = Injector(fleet.model, list(schedule), fleet.series, DAY_START_MS)
    pipeline = Pipeline(settings, PARTITIONS)
    partitions = {service.name: partition_of(service.name) for service in fleet.services}
    step_s = TICK_MS / 1000.0  # one record per service per timer tick: a few seconds of its calls
    drain_every = int(DRAIN_EVERY_S / step_s)
    for k in range(int(np.ceil(duration_s / step_s))):
        begin_ms, now_ms = DAY_START_MS + k * TICK_MS, DAY_START_MS + (k + 1) * TICK_MS
        for service, generated in fleet.step(k * step_s, (k + 1) * step_s, DAY_START_MS):
            block = injector.apply(generated, begin_ms, now_ms, rng)
            calls = to_columns(block)
            pipeline.process(partitions[service], calls, now_ms)
            verdicts = feedback_of(block, calls.event_id)
            if verdicts is not None:
                pipeline.feedback(partitions[service], verdicts, now_ms)
        pipeline.tick(now_ms)
        if k % drain_every == 0:
            pipeline.drain()
    return Day(pipeline.log, pipeline.calls, injector.touched, fleet.shape, time.perf_counter() - began)


def _seeds(seed: int) -> tuple[int, int, int, int]:
    """Independent streams for the control day, the incident day, the budget sample and the targets."""
    control, incidents, budgets, targets = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(4))
    return control, incidents, budgets, targets


def _run_all(settings: ProcessorSettings, seeds: tuple[int, int], lengths: tuple[float, float],
             schedule: list[Injected], quick: bool, parallel: bool,
             drift_sizes: tuple[int, int, int] | None) -> tuple[Day, Day, tuple[dict[str, Any], str]]:
    """The control day, the incident day and the drift figures; each in a process of its own when ``parallel``
    (on two cores three at once end sooner than the two days first and the drift figures after: the quick run in
    tests/unit/test_bench_alerts.py took 138 s against 158 s, one run each, side by side)."""
    control_job = (settings, seeds[0], lengths[0], [])
    incident_job = (settings, seeds[1], lengths[1], schedule)
    if not parallel:
        return replay(*control_job), replay(*incident_job), _drift(quick, drift_sizes)
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        incidents = pool.submit(replay, *incident_job)
        control = pool.submit(replay, *control_job)
        drift = pool.submit(_drift, quick, drift_sizes)
        return control.result(), incidents.result(), drift.result()


def measure(quick: bool, seed: int = DEFAULT_SEED, schedule: Path | None = None,
            parallel: bool | None = None, judged_control_s: float | None = None,
            drift_sizes: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Every figure (``FIGURES``), the per-kind detail (``DETAILS``) and a note per figure under ``notes``;
    ``judged_control_s`` replaces the variant's control time after the warm-up, ``drift_sizes`` the drift
    figures' (bench/drift_quality.py ``measure``)."""
    variant = QUICK if quick else FULL
    if judged_control_s is not None:
        variant = replace(variant, control_s=judged_control_s)
    control_seed, incident_seed, budget_seed, target_seed = _seeds(seed)
    series = fleet_series(fleet_model(), RATE)
    plan = load(schedule or variant.schedule, series, np.random.default_rng(target_seed))
    if not plan:
        raise ValueError(f"{schedule}: no incidents")
    base = ProcessorSettings()
    control_s = WARMUP_S + variant.control_s
    budgets = alert_budgets.derive(base, RATE, budget_seed, control_s, DAY_START_MS)
    settings = base.model_copy(update={"budgets": budgets})
    day_s = variant.day_s or max(i.end_s for i in plan) + TAIL_S
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    control, incidents, (drift, drift_note) = _run_all(settings, (control_seed, incident_seed), (control_s, day_s),
                                                       plan, quick, parallel, drift_sizes)

    judged_from = DAY_START_MS + int(min(WARMUP_S, min(i.start_s for i in plan)) * 1000)
    control_from = DAY_START_MS + int(WARMUP_S * 1000)
    per_day = DAY_S / variant.control_s
    verdicts = judge(incidents.log, plan, series, DAY_START_MS)
    by_priority = pages_by_priority(control.log, control_from)
    firings = firings_by_priority(control.log, control_from)
    incident_pages = incidents.log.pages(judged_from)
    explained, unexplained = explained_pages(incidents.log, verdicts, judged_from)
    kinds = _by_kind(verdicts, incidents, day_s)
    fast = [k for k in FAST_KINDS if k in kinds]
    detect_p95 = [kinds[k]["detect_delay_p95_s"] for k in fast if kinds[k]["detect_delay_p95_s"] is not None]
    page_p95 = [kinds[k]["page_delay_p95_s"] for k in fast if kinds[k]["page_delay_p95_s"] is not None]
    pooled = [_delay_s(v) for v in verdicts if v.incident.kind in fast and v.detected]
    resolves = [_resolve_s(v, day_s) for v in verdicts if v.detected and v.incident.kind not in NEVER_RESOLVE]
    unresolved = sum(1 for v in verdicts if v.detected and v.incident.kind not in NEVER_RESOLVE
                     and v.resolved_at_ms is None)
    n = len(plan)

    figures: dict[str, Any] = {
        "alert_recall_min": min(k["recall"] for k in kinds.values()),
        "pages_per_incident": len(incident_pages) / n,
        "member_firings_per_incident": len(incidents.log.member_firings(judged_from)) / n,
        "false_pages_p0p1_per_day": (by_priority["P0"] + by_priority["P1"]) * per_day,
        "false_pages_p2_per_day": by_priority["P2"] * per_day,
        "false_member_firings_p0p1_per_day": (firings["P0"] + firings["P1"]) * per_day,
        "false_member_firings_p2_per_day": firings["P2"] * per_day,
        "detect_delay_p50_s": quantiles(pooled)[0],
        "detect_delay_p95_s": max(detect_p95) if detect_p95 else None,
        "page_delay_p95_s": max(page_p95) if page_p95 else None,
        "drift_detect_windows_max": _number(drift.get("drift_detect_windows_max")),
        "resolve_delay_p95_s": quantiles(resolves)[1],
        "drift_false_per_100_series_days": _number(drift.get("drift_false_per_100_series_days")),
        "alert_recall_by_kind": {kind: k["recall"] for kind, k in kinds.items()},
        "alert_quality_by_kind": kinds,
        "alert_quality_run": {
            "variant": variant.name, "seed": seed, "schedule": str(schedule or variant.schedule),
            "rate_calls_per_s": RATE, "series": len(series), "traffic_shape": control.traffic_shape,
            "control_hours": control_s / 3600, "incident_day_hours": day_s / 3600, "warmup_s": WARMUP_S,
            "calls": {"control": control.calls, "incident_day": incidents.calls},
            "wall_s": {"control": round(control.wall_s, 1), "incident_day": round(incidents.wall_s, 1)},
            "budgets_usd": {k: v for k, v in budgets.model_dump().items() if k.endswith("_usd") and v is not None},
            "control_pages": [describe_page(p) for p in control.log.pages(control_from)],
            "control_pages_by_rule": dict(pages_by_rule(control.log, control_from)),
            "control_member_firings_by_rule": dict(Counter(a.rule for _, a in
                                                           control.log.member_firings(control_from))),
            "incident_day_pages": {"explained": explained, "other": unexplained,
                                   "other_by_rule": _other_by_rule(incidents.log, verdicts, judged_from)},
            "incidents": [_row(v, incidents.touched) for v in verdicts],
        },
    }
    figures["notes"] = _notes(variant, seed, n, len(kinds), per_day, unresolved, drift_note, budgets.global_hour_usd)
    return figures


def _delay_s(verdict: Verdict, paged: bool = False) -> float:
    """Event-time seconds from the injected start to detection (the first matching member's start) or, with
    ``paged``, to the page that carried it."""
    start_ms = DAY_START_MS + int(verdict.incident.start_s * 1000)
    at = verdict.paged_at_ms if paged else verdict.detected_at_ms
    return ((at or start_ms) - start_ms) / 1000.0


def _resolve_s(verdict: Verdict, day_s: float) -> float:
    """Seconds from the injected end to the resolve; an unresolved incident counts at its lower bound."""
    end_ms = DAY_START_MS + int(verdict.incident.end_s * 1000)
    resolved = verdict.resolved_at_ms if verdict.resolved_at_ms is not None else DAY_START_MS + int(day_s * 1000)
    return (resolved - end_ms) / 1000.0


def _by_kind(verdicts: Sequence[Verdict], day: Day, day_s: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in SCENARIOS:
        mine = [v for v in verdicts if v.incident.kind == kind]
        if not mine:
            continue
        found = [v for v in mine if v.detected]
        detect = quantiles([_delay_s(v) for v in found])
        paged = quantiles([_delay_s(v, paged=True) for v in found])
        resolve = quantiles([_resolve_s(v, day_s) for v in found]) if kind not in NEVER_RESOLVE else (None, None)
        out[kind] = {
            "injected": len(mine), "detected": len(found), "recall": len(found) / len(mine),
            "detect_delay_p50_s": detect[0], "detect_delay_p95_s": detect[1],
            "page_delay_p50_s": paged[0], "page_delay_p95_s": paged[1],
            "resolve_delay_p50_s": resolve[0], "resolve_delay_p95_s": resolve[1],
            "unresolved": sum(1 for v in found if v.resolved_at_ms is None) if kind not in NEVER_RESOLVE else None,
            "calls_touched": sum(day.touched[v.incident.index] for v in mine),
            "pages_in_window_mean": sum(len(v.window_pages) for v in mine) / len(mine),
        }
    return out


def _row(verdict: Verdict, touched: dict[int, int]) -> dict[str, Any]:
    i = verdict.incident
    end_ms = DAY_START_MS + int(i.end_s * 1000)
    return {
        "kind": i.kind, "scope": f"{i.scope}:{i.target}", "start_s": i.start_s, "duration_s": i.duration_s,
        "magnitude": i.magnitude, "calls_touched": touched[i.index], "detected": verdict.detected,
        "detect_delay_s": _delay_s(verdict) if verdict.detected else None,
        "page_delay_s": _delay_s(verdict, paged=True) if verdict.detected else None, "priority": verdict.priority,
        "rules": verdict.rules, "incident_id": verdict.incident_id, "pages_in_window": verdict.window_pages,
        "resolve_delay_s": None if verdict.resolved_at_ms is None else (verdict.resolved_at_ms - end_ms) / 1000.0,
    }


def _other_by_rule(log: Log, verdicts: Sequence[Verdict], since_ms: int) -> dict[str, int]:
    detecting = {v.incident_id for v in verdicts if v.incident_id}
    return dict(Counter(p.event.rules[0] if p.event.rules else "?" for p in log.pages(since_ms)
                        if p.event.incident_id not in detecting))


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _drift(quick: bool, sizes: tuple[int, int, int] | None) -> tuple[dict[str, Any], str]:
    """The drift figures of bench/drift_quality.py (another part of issue #13), or why they are missing."""
    try:
        return dict(drift_quality.measure(quick, sizes=sizes)), "from bench/drift_quality.py"
    except Exception as exc:  # its failure must not cost this benchmark its figures
        return {}, f"missing: bench.drift_quality.measure failed: {type(exc).__name__}: {exc}"


def _notes(variant: Variant, seed: int, injected: int, kinds: int, per_day: float, unresolved: int, drift_note: str,
           hour_budget: float | None) -> dict[str, str]:
    scale = f"{variant.control_s / 3600:g} h control x {per_day:g}" if per_day != 1 else "a 24 h control day"
    return {
        "alert_recall_min": f"one run ({variant.name}, seed {seed}): lowest recall over {kinds} kinds, {injected} "
                            f"injected incidents; detected = a page within the incident or {GRACE_S:.0f} s after, "
                            f"with a member in scope",
        "pages_per_incident": "every page (opened/escalated, paging) on the incident day after the warm-up / injected",
        "member_firings_per_incident": "before incidents: every firing member alert event (P0-P2, escalations "
                                       "included) on the incident day / injected",
        "false_pages_p0p1_per_day": f"control day, {scale}; budgets from a control sample (global ${hour_budget}/h)",
        "false_pages_p2_per_day": f"control day, {scale}",
        "false_member_firings_p0p1_per_day": f"before incidents: firing member alerts, P0/P1, control day, {scale}",
        "false_member_firings_p2_per_day": f"before incidents: firing member alerts, P2, control day, {scale}",
        "detect_delay_p50_s": "median (nearest rank) over every detected latency, errors, outage, budget and "
                              "injection incident",
        "detect_delay_p95_s": "worst per-kind p95 (nearest rank) over latency, errors, outage, budget and injection, "
                              "event time from the injected start to detection: the start of the first member "
                              "alert of the incident that paged for it",
        "page_delay_p95_s": "the same to the page itself (detection plus the incident's group wait: 60 s below "
                            "CRITICAL, none for CRITICAL)",
        "resolve_delay_p95_s": f"incident resolved_at - injected end; budget and A/B excluded (never resolve); "
                               f"{unresolved} unresolved by the end of the run, counted at that lower bound",
        "drift_detect_windows_max": drift_note,
        "drift_false_per_100_series_days": drift_note,
    }


def run(quick: bool, seed: int = DEFAULT_SEED) -> tuple[GroupResult, dict[str, Any]]:
    """For bench/run.py: the figures as a group, and the per-kind detail for latest.json."""
    measured = measure(quick, seed)
    result = GroupResult()
    notes = measured["notes"]
    for key in FIGURES:
        result.put(key, measured[key], notes.get(key, ""))
    return result, {key: measured[key] for key in DETAILS}


def _table(measured: dict[str, Any]) -> str:
    lines = [f"{key:36s} {_fmt(measured[key])}" for key in FIGURES]
    lines += ["", f"{'kind':20s} {'recall':>6s} {'detect p50/p95 s':>17s} {'resolve p50/p95 s':>18s} pages in window"]
    for kind, k in measured["alert_quality_by_kind"].items():
        lines.append(f"{kind:20s} {k['detected']}/{k['injected']:<4d} "
                     f"{_fmt(k['detect_delay_p50_s']):>8s}/{_fmt(k['detect_delay_p95_s']):<8s} "
                     f"{_fmt(k['resolve_delay_p50_s']):>9s}/{_fmt(k['resolve_delay_p95_s']):<8s} "
                     f"{_fmt(k['pages_in_window_mean'])}")
    run_info = measured["alert_quality_run"]
    lines += ["", f"control pages by rule: {run_info['control_pages_by_rule']}",
              f"incident day pages: {run_info['incident_day_pages']}", f"wall s: {run_info['wall_s']}"]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 h control, one incident per kind (a minute or two)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--schedule", type=Path, help="JSON lines: kind, scope, start, duration, magnitude")
    parser.add_argument("--json", action="store_true", help="print every key as one JSON object")
    parser.add_argument("--serial", action="store_true", help="run both days in this process")
    parser.add_argument("--control-hours", type=float, help="judged control time (default: 3 quick, 24 full)")
    args = parser.parse_args(argv)
    judged = None if args.control_hours is None else args.control_hours * 3600
    measured = measure(args.quick, args.seed, args.schedule, parallel=False if args.serial else None,
                       judged_control_s=judged)
    print(json.dumps(measured, indent=2) if args.json else _table(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
