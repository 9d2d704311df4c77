"""Run the benchmark suite and write bench/results/latest.json and latest.md.

    python -m bench.run --quick              # ~100k calls per throughput run, a few minutes
    python -m bench.run --full               # ~1M calls, plus the 10-minute stability run
    python -m bench.run --quick --only sdk   # one group (or the group of a figure key); merged into latest.json

Groups: throughput, inprocess, alerts, alert_quality, sdk, accuracy, detectors, layout, stability, wire (decode
cost per wire format, worker on OTLP vs Avro: bench/wire_formats.py), cardinality (in process), worker_cardinality
(the real worker at ~100 vs ~10,000 series), scaleout (two workers vs one: bench/scaleout.py). Parts needing
Kafka use ``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092) and are reported as skipped when it does not
answer. Every topic a run creates carries the run's tag and is deleted at the end. ``alerts`` is the latency of
one alert through a live worker; ``alert_quality`` (bench/alerts.py, in process, no broker) replays a control
day and a labelled day of incidents and scores the pages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    ab_sequential,
    accuracy,
    admission,
    alert_latency,
    alerts,
    batch_layout,
    cardinality,
    dataset,
    detectors,
    inprocess,
    report,
    scaleout,
    sdk,
    stability,
    throughput,
    wire_formats,
)
from bench.common import FULL, QUICK, GroupResult, Scale, round_floats

RESULTS = Path(__file__).parent / "results"
GROUPS = ("accuracy", "detectors", "layout", "inprocess", "sdk", "throughput", "alerts", "alert_quality", "stability",
          "cardinality", "worker_cardinality", "scaleout", "wire", "ab", "admission")
KEYS_OF = {
    "throughput": ("raw_consume_eps", "decode_eps", "worker_eps", "faust_noop_eps", "worker_vs_raw",
                   "worker_vs_decode", "worker_vs_faust_noop"),
    "inprocess": ("sketch_overhead_ratio", "metrics_overhead_ratio"),
    "alerts": ("alert_latency_live_max_eps", "alert_latency_p50_s", "alert_latency_p99_s", "alert_latency_p50_s_80pct",
               "alert_latency_p99_s_80pct", "alert_latency_p50_s_80pct_preloaded",
               "alert_latency_p99_s_80pct_preloaded", "passthrough_p99_s"),
    "alert_quality": alerts.FIGURES,
    "sdk": ("sdk_emit_p50_us", "sdk_emit_p99_us", "sdk_emit_p99_us_broker_down"),
    "admission": admission.KEYS,
    "accuracy": ("percentile_rel_err_max", "prom_histogram_rel_err_max_default", "prom_histogram_rel_err_max_tuned"),
    "stability": ("rss_mb_warm", "rss_mb_end", "throughput_drift_ratio"),
    "detectors": ("guard_us_per_event", "drift_us_per_event"),
    "layout": (),
    "cardinality": cardinality.FIGURES,
    "worker_cardinality": cardinality.WORKER_FIGURES,
    "scaleout": scaleout.FIGURES,
    "wire": wire_formats.FIGURES,
    "ab": ab_sequential.FIGURES,
}
FALLBACK_WORKER_EPS = 20_000.0


class Suite:
    """Runs the chosen groups in order, keeping every figure and the reason for anything skipped."""

    def __init__(self, scale: Scale, bootstrap: str, previous: dict[str, Any]) -> None:
        self.scale, self.bootstrap = scale, bootstrap
        self.tag = dataset.run_tag()
        self.result = GroupResult()
        self.errors: dict[str, str] = {}
        self.previous = previous
        self.details: dict[str, Any] = {}  # nested figures for latest.json (per-kind alert quality)
        self._broker: bool | None = None

    @property
    def broker(self) -> bool:
        """Whether Kafka answers; asked once, and only by a part that needs it."""
        if self._broker is None:
            self._broker = dataset.broker_up(self.bootstrap)
        return self._broker

    def worker_rate(self) -> tuple[float, str]:
        """The worker's top rate for the fixed-load runs: this run's, the last run's, or a guess."""
        for source, figures in (("this run", self.result.figures), ("previous run", self.previous)):
            value = figures.get("worker_eps")
            if value:
                return float(value), source
        value = self.result.figures.get("inprocess_eps") or self.previous.get("inprocess_eps")
        if value:
            return 0.5 * float(value), "half the in-process rate (no worker figure)"
        return FALLBACK_WORKER_EPS, "a fixed guess (no figure)"

    def steps(self) -> dict[str, Callable[[], GroupResult]]:
        s, b, tag = self.scale, self.bootstrap, self.tag
        return {
            "accuracy": lambda: accuracy.run(),
            "detectors": lambda: detectors.run(s),
            "layout": lambda: batch_layout.run(s),
            "cardinality": lambda: cardinality.run(quick=s.name != FULL.name),
            "worker_cardinality": lambda: self._needs_broker("worker_cardinality",
                                                             lambda: cardinality.worker_run(s, b, tag)),
            "scaleout": lambda: self._needs_broker("scaleout", lambda: scaleout.run(s, b, tag)),
            "inprocess": lambda: inprocess.run(s),
            "sdk": lambda: sdk.run(s, b if self.broker else None, tag),
            "admission": lambda: admission.run(s, b if self.broker else None),
            "throughput": lambda: self._needs_broker("throughput", lambda: throughput.run(s, b, tag)),
            "alerts": lambda: self._needs_broker(
                "alerts", lambda: self._at_rate(alert_latency.run, "alert_latency_live_max_eps")),
            "alert_quality": self._alert_quality,
            "stability": self._stability,
            "wire": lambda: wire_formats.run(s, b if self.broker else None, tag),
            "ab": lambda: ab_sequential.run(s),
        }

    def _at_rate(self, step: Callable[[str, str, float], GroupResult], *keys: str) -> GroupResult:
        rate, source = self.worker_rate()
        result = step(self.bootstrap, self.tag, rate)
        for key in keys:
            result.notes[key] = f"{result.notes.get(key, '')}; max worker rate {rate:,.0f} calls/s from {source}"
        return result

    def _alert_quality(self) -> GroupResult:
        result, details = alerts.run(quick=self.scale.name != FULL.name)
        self.details.update(details)
        return result

    def _needs_broker(self, group: str, step: Callable[[], GroupResult]) -> GroupResult:
        if not self.broker:
            return _nulls(group, f"skipped: no Kafka broker at {self.bootstrap}")
        return step()

    def _stability(self) -> GroupResult:
        if self.scale.stability_s is None:
            return stability.skipped("skipped: full mode only (10-minute run)")
        duration = self.scale.stability_s

        def steady(bootstrap: str, tag: str, rate: float) -> GroupResult:
            return stability.run(bootstrap, tag, rate, duration)

        return self._needs_broker("stability", lambda: self._at_rate(steady, "rss_mb_warm"))

    def run(self, groups: list[str]) -> None:
        steps = self.steps()
        try:
            for group in groups:
                started = time.monotonic()
                print(f"[bench] {group} ...", file=sys.stderr, flush=True)
                try:
                    self.result.merge(steps[group]())
                except Exception as exc:  # one broken part must not cost the others their figures
                    traceback.print_exc()
                    self.errors[group] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    self.result.merge(_nulls(group, f"failed: {self.errors[group]}"))
                print(f"[bench] {group} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        finally:
            if self._broker:
                dataset.delete_topics_with(self.bootstrap, self.tag)


def _nulls(group: str, reason: str) -> GroupResult:
    result = GroupResult()
    for key in KEYS_OF.get(group, ()):
        result.put(key, None, reason)
    return result


def group_of(name: str) -> str:
    if name in GROUPS:
        return name
    for group, keys in KEYS_OF.items():
        if name in keys:
            return group
    raise SystemExit(f"unknown group or key {name!r}; groups: {', '.join(GROUPS)}")


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="~100k calls per run, a few minutes (default)")
    mode.add_argument("--full", action="store_true", help="~1M calls and the 10-minute stability run")
    parser.add_argument("--only", action="append", metavar="KEY", help="a group or figure key (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-profile", action="store_true", help="skip the profile even when a goal fails")
    args = parser.parse_args(argv)
    scale = FULL if args.full else QUICK
    groups = [g for g in GROUPS if g in {group_of(name) for name in args.only}] if args.only else list(GROUPS)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    args.out.mkdir(parents=True, exist_ok=True)
    latest = args.out / "latest.json"
    previous = json.loads(latest.read_text()) if latest.exists() else {}
    previous_figures = {k: v for k, v in previous.items() if isinstance(v, int | float)}

    meta = {"mode": scale.name, "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "python": platform.python_version(), "cpus": os.cpu_count(), "broker": bootstrap,
            "loadavg": _loadavg(), "groups": groups}
    suite = Suite(scale, bootstrap, previous_figures)
    suite.run(groups)
    figures: dict[str, Any] = {key: None for key in report.REQUIRED}
    notes: dict[str, str] = dict(previous.get("notes", {})) if args.only else {}
    if args.only:  # a partial run refreshes its groups and keeps the rest of the last file
        figures.update(previous_figures)
    figures.update(suite.result.figures)
    notes.update(suite.result.notes)
    kept = args.only and "alert_quality" not in groups  # a partial run keeps the detail of groups it did not run
    details = {k: v for k, v in previous.items() if k in alerts.DETAILS} if kept else {}
    details.update(suite.details)
    meta["errors"] = suite.errors
    verdicts = report.verdicts(figures)
    if any(v is False for v in verdicts.values()) and not args.no_profile:
        from bench import profile

        meta["hot_spots"] = profile.hot_spots(args.out / "profile.txt")
    payload = {**round_floats(figures), **round_floats(details),
               "goals": {k: {"goal": g.text, "pass": verdicts[k]} for k, g in report.GOALS.items()},
               "notes": notes, "meta": meta}
    latest.write_text(json.dumps(payload, indent=2) + "\n")
    table = report.markdown(figures, notes, meta, details)
    (args.out / "latest.md").write_text(table)
    print(table)
    # the quick suite leaves out the 10-minute stability run by design; asked for by name, its absence fails
    by_design = set(KEYS_OF["stability"]) if scale.stability_s is None and not args.only else set()
    unmeasured = {key: notes.get(key, "no figure") for group in groups for key in KEYS_OF.get(group, ())
                  if key in report.GOALS and figures.get(key) is None and key not in by_design}
    for key, reason in unmeasured.items():
        print(f"[bench] not measured: {key}: {reason}", file=sys.stderr)
    return 1 if unmeasured else 0


if __name__ == "__main__":
    sys.exit(main())
