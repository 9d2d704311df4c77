"""Drift alert quality on replayed traces: false drift alerts per 100 series-days, and how fast real shifts fire.

    python -m bench.drift_quality [--quick] [--json]

Traffic. Every (service, model) series of the simulator's traffic model replays the trace of its service's
workload (the file producers/simulation/data/traffic_model.json names) in the trace's own order and timing, at about
``RATE`` calls/s: it takes a random share RATE / trace rate of the trace's calls at their recorded times, the
hour-long trace looped with a fresh share each loop and a random starting point each day, so the workload's own
swings stay in (the Azure conversation trace alternates phases of short and long answers). The traffic model
supplies what traces lack (latency from tokens per model, Beta confidence, failed calls without confidence,
cache hits). Without the traces (``LLMPULSE_BENCH_TRACES``, default /work/shared/data/traces) tokens come from
the model's lognormal fits, independent draws with Poisson arrivals, and ``source`` says so.

Driving. DriftMonitor and AlertPolicy as PartitionEngine drives them, in event time: per record (here the
series' calls of each ``BATCH_MS``) ``update``, ``observe(series, event_ms)`` and ``policy.observe_many``; every
``BATCH_MS`` the timer's ``observe(force=True)`` and ``policy.tick``; each resolved or acknowledged event goes to
``DriftMonitor.rebaseline_for_alert`` as the engine's hook does. Nobody acknowledges anything here.

Figures.
- ``drift_false_per_100_series_days``: firings (new alert ids) of distribution_drift or confidence_drift on
  unshifted replays, per 100 series-days; each series-day starts from an empty monitor (reference included).
  ``..._shuffled``: the same with each day's tokens dealt in random order (no phases), for comparison.
- ``drift_detect_windows_{confidence,latency}_{median,max}``: once the reference is complete (plus 0-2 blocks),
  from a random call on confidence x 0.9 (its mean -10 %) or latency x 1.5; calls from the shift to the first
  firing of a drift rule naming that feature, over ``block_size``. Not firing within ``MAX_BLOCKS`` is inf.
- ``drift_detect_windows_max``: the worse of the two maxima.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmpulse.processors import configure
from llmpulse.processors.core.alert_policy import ACKNOWLEDGED, FIRING, RESOLVED, AlertEvent, AlertPolicy, Observation
from llmpulse.processors.core.drift_monitor import DriftMonitor
from llmpulse.processors.core.slots import series_key
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.producers.simulation.trace_replay import Trace, read_trace
from llmpulse.producers.simulation.traffic_model import DEFAULT_PARAMS_PATH, TrafficModel

TRACES = Path(os.environ.get("LLMPULSE_BENCH_TRACES", "/work/shared/data/traces"))
RATE = 1.0  # calls/s per series
DAY_S = 86_400.0
BATCH_MS = 5_000  # the engine's evaluation throttle and the worker's timer period
MAX_BLOCKS = 6
DRIFT_RULES = ("distribution_drift", "confidence_drift")
Tokens = np.ndarray | None  # token counts of a trace, None: let the traffic model draw them
SHIFTS = {"confidence": 0.9, "latency": 1.5}  # feature -> factor applied from the shift on


class Monitor(Protocol):
    """What the benchmark needs of a drift monitor (the current one, or an older one for a before figure)."""

    config: Any

    def update(self, series: list[str], inverse: np.ndarray, values: dict[str, np.ndarray], offset: int) -> None: ...

    def observe(self, key: str, now_ms: int, force: bool = False) -> list[Observation]: ...


@dataclass(frozen=True, slots=True)
class Series:
    service: str
    model: str
    workload: str

    @property
    def key(self) -> str:
        return series_key((self.service, self.model))


class Source:
    """One workload's trace, replayed at ``RATE`` calls/s in its own order and timing (or the fallback)."""

    def __init__(self, trace: Trace | None) -> None:
        self.trace = trace
        if trace is not None:
            self.offsets_s = np.asarray(trace.offsets_ms, dtype=np.float64) / 1000.0
            self.inputs = np.asarray(trace.input_tokens, dtype=np.int64)
            self.outputs = np.asarray(trace.output_tokens, dtype=np.int64)
            self.span_s = float(self.offsets_s[-1]) * len(trace) / max(1, len(trace) - 1)  # loop without a gap
            self.share = min(1.0, RATE * self.span_s / len(trace))

    def calls(self, rng: np.random.Generator, duration_s: float,
              shuffled: bool = False) -> tuple[np.ndarray, Tokens, Tokens]:
        """(arrival seconds, input tokens, output tokens) of one series over ``duration_s``; ``shuffled`` deals
        the same calls' tokens in random order (the trace's phases gone, its arrivals kept)."""
        if self.trace is None:
            times = np.cumsum(rng.exponential(1.0 / RATE, int(duration_s * RATE * 1.1) + 64))
            return times[times < duration_s], None, None
        start = rng.uniform(0.0, self.span_s)
        loops = math.ceil((duration_s + start) / self.span_s)
        picks = [np.flatnonzero(rng.random(self.offsets_s.size) < self.share) for _ in range(loops)]
        index = np.concatenate(picks)
        times = np.concatenate([k * self.span_s + self.offsets_s[p] for k, p in enumerate(picks)]) - start
        keep = (times >= 0.0) & (times < duration_s)
        rows = rng.permutation(index[keep]) if shuffled else index[keep]
        return times[keep], self.inputs[rows], self.outputs[rows]


def load_sources() -> tuple[dict[str, Source], str]:
    params = json.loads(DEFAULT_PARAMS_PATH.read_text(encoding="utf-8"))["workloads"]
    if not TRACES.is_dir():
        return {name: Source(None) for name in params}, (
            f"{TRACES} absent: synthetic traffic, lognormal tokens fitted to the traces, Poisson arrivals")
    sources, described = {}, []
    for name, spec in params.items():
        path = TRACES / spec["file"]
        trace = read_trace(path) if path.is_file() else None
        sources[name] = Source(trace)
        described.append(f"{spec['file']} ({len(trace):,} calls)" if trace else f"{spec['file']} absent: lognormal")
    return sources, "replayed in order at their own timing: " + ", ".join(described)


def all_series(model: TrafficModel) -> list[Series]:
    return [Series(s.name, m, s.workload) for s in model.services for m, _ in s.models]


def one_series_model(model: TrafficModel, series: Series) -> TrafficModel:
    spec = next(s for s in model.services if s.name == series.service)
    return replace(model, services=(replace(spec, models=((series.model, 1.0),)),))


def columns_for(model: TrafficModel, source: Source, rng: np.random.Generator, duration_s: float,
                start_ms: int, shuffled: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Timestamps and the three drift columns exactly as PartitionEngine.process builds them."""
    times, inputs, outputs = source.calls(rng, duration_s, shuffled)
    block = model.block(start_ms + np.rint(times * 1000.0).astype(np.int64), rng, inputs, outputs)
    return block.timestamp_ms, {
        "confidence": block.confidence.astype(np.float64),
        "latency": block.latency_ms / 1000.0,
        "tokens": (block.input_tokens + block.output_tokens).astype(np.float64),
    }


def drive(monitor: Monitor, policy: AlertPolicy, key: str, stamps: np.ndarray,
          columns: dict[str, np.ndarray]) -> list[AlertEvent]:
    """Every alert event, in order, of one series' calls through the monitor and the policy."""
    events: list[AlertEvent] = []
    hook = getattr(monitor, "rebaseline_for_alert", None)
    ticks = np.arange(int(stamps[0]) // BATCH_MS * BATCH_MS + BATCH_MS, int(stamps[-1]) + BATCH_MS + 1, BATCH_MS)
    cuts = np.searchsorted(stamps, ticks, side="left")
    inverse = np.zeros(int(cuts.max()), dtype=np.int64)
    lo = 0
    for offset, (hi, tick_ms) in enumerate(zip(cuts.tolist(), ticks.tolist(), strict=True)):
        decided: list[AlertEvent] = []
        if hi > lo:  # a record: PartitionEngine.process
            monitor.update([key], inverse[: hi - lo], {name: col[lo:hi] for name, col in columns.items()}, offset)
            decided += policy.observe_many(monitor.observe(key, int(stamps[hi - 1])))
        # the timer: PartitionEngine.tick
        decided += policy.observe_many(monitor.observe(key, tick_ms, force=True)) + policy.tick(tick_ms)
        if hook is not None:
            for event in decided:
                if event.status in (RESOLVED, ACKNOWLEDGED):
                    hook(event)
        events += decided
        lo = hi
    return events


def firings(events: list[AlertEvent]) -> list[AlertEvent]:
    """New drift incidents (escalations repeat an alert id and are not counted)."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event.rule in DRIFT_RULES and event.status == FIRING and event.alert_id not in seen:
            seen.add(event.alert_id)
            out.append(event)
    return out


def feature_of(event: AlertEvent) -> str:
    return event.labels.get("feature", "confidence") if event.rule == "distribution_drift" else "confidence"


@dataclass(slots=True)
class Setup:
    make_monitor: Callable[[], Monitor]
    alerts: Any
    model: TrafficModel
    sources: dict[str, Source]
    series: list[Series]

    def policy(self) -> AlertPolicy:
        return AlertPolicy(self.alerts)


def false_alarms(setup: Setup, days: int, seed: int, shuffled: bool = False) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    days_with = 0
    for day in range(days):
        rng = np.random.default_rng([seed, day])
        series = setup.series[day % len(setup.series)]
        monitor = setup.make_monitor()
        stamps, columns = columns_for(one_series_model(setup.model, series), setup.sources[series.workload], rng,
                                      DAY_S, 1_700_000_000_000 + day * 86_400_000, shuffled)
        fired = firings(drive(monitor, setup.policy(), series.key, stamps, columns))
        days_with += bool(fired)
        counts.update(f"{series.workload}/{e.rule}/{feature_of(e)}" for e in fired)
    total = sum(counts.values())
    if shuffled:
        return {"drift_false_per_100_series_days_shuffled": 100.0 * total / days,
                "drift_false_series_days_shuffled": days}
    return {"drift_false_per_100_series_days": 100.0 * total / days, "drift_false_series_days": days,
            "drift_false_days_with_alert": days_with, "drift_false_by_source": dict(sorted(counts.items()))}


def detection(setup: Setup, shift: str, trials: int, seed: int) -> dict[str, Any]:
    config = setup.make_monitor().config
    block, reference = config.block_size, config.reference_size
    windows: list[float] = []
    early = 0
    for trial in range(trials):
        rng = np.random.default_rng([seed, trial, len(shift)])
        series = setup.series[trial % len(setup.series)]
        monitor = setup.make_monitor()
        # past the reference of every feature (confidence misses on failed calls), then 0-2 blocks more
        start = int(reference * 1.05) + 20 + int(rng.integers(0, 2 * block))
        duration = (start + (MAX_BLOCKS + 1) * block) / RATE * 1.3
        stamps, columns = columns_for(one_series_model(setup.model, series), setup.sources[series.workload], rng,
                                      duration, 1_700_000_000_000)
        start = min(start, stamps.size - 1)
        columns[shift][start:] *= SHIFTS[shift]
        fired = firings(drive(monitor, setup.policy(), series.key, stamps, columns))
        early += sum(1 for e in fired if e.started_at_ms < stamps[start])
        hits = [e for e in fired if e.started_at_ms >= stamps[start] and feature_of(e) == shift]
        delay = (np.searchsorted(stamps, hits[0].started_at_ms, side="right") - start) if hits else math.inf
        windows.append(delay / block if delay <= MAX_BLOCKS * block else math.inf)
    return {f"drift_detect_windows_{shift}_median": statistics.median(windows),
            f"drift_detect_windows_{shift}_max": max(windows),
            f"drift_detect_{shift}_trials": trials,
            f"drift_detect_{shift}_fired_before_shift": early}


def measure(quick: bool, make_monitor: Callable[[], Monitor] | None = None,
            sizes: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The figures above; quick: 16 series-days (8 more shuffled) and 8 trials per shift, else 104 (48) and 24;
    ``sizes`` (series-days, shuffled series-days, trials per shift) replaces the variant's."""
    started = time.perf_counter()
    settings = ProcessorSettings()
    engine = configure.engine_config(settings)
    make = make_monitor or (lambda: DriftMonitor(engine.drift))
    sources, source = load_sources()
    model = TrafficModel.load()
    setup = Setup(make, engine.alerts, model, sources, all_series(model))
    days, shuffled_days, trials = sizes or ((16, 8, 8) if quick else (104, 48, 24))
    out: dict[str, Any] = {"source": source, "rate_calls_per_s_per_series": RATE}
    out.update(false_alarms(setup, days, seed=11))
    if sources and any(s.trace is not None for s in sources.values()):
        out.update(false_alarms(setup, shuffled_days, seed=13, shuffled=True))
    for shift in SHIFTS:
        out.update(detection(setup, shift, trials, seed=23))
    out["drift_detect_windows_max"] = max(out[f"drift_detect_windows_{s}_max"] for s in SHIFTS)
    config = make().config
    out["config"] = {name: getattr(config, name) for name in ("reference_size", "block_size", "min_current")}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 series-days (+8 shuffled), 8 trials per shift")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = measure(args.quick)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for name, value in result.items():
            print(f"{name:45s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
