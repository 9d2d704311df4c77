"""Goals, pass/fail, and the markdown table of a benchmark run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    check: Callable[[float, Mapping[str, float | None]], bool]


def _at_least(limit: float) -> Callable[[float, Mapping[str, float | None]], bool]:
    return lambda value, _figures: value >= limit


def _at_most(limit: float) -> Callable[[float, Mapping[str, float | None]], bool]:
    return lambda value, _figures: value <= limit


def _rss_growth(value: float, figures: Mapping[str, float | None]) -> bool:
    warm = figures.get("rss_mb_warm")
    return bool(warm) and value < 1.10 * warm  # type: ignore[operator]


GOALS: dict[str, Goal] = {
    "worker_vs_decode": Goal(">= 0.50 (stretch 0.75)", _at_least(0.50)),
    "worker_vs_faust_noop": Goal(">= 5", _at_least(5.0)),
    "sketch_overhead_ratio": Goal(">= 0.90", _at_least(0.90)),
    "metrics_overhead_ratio": Goal(">= 0.95", _at_least(0.95)),
    "alert_latency_p99_s": Goal("<= 1 s", _at_most(1.0)),
    "sdk_emit_p99_us": Goal("<= 50 us", _at_most(50.0)),
    "sdk_emit_p99_us_broker_down": Goal("<= 50 us", _at_most(50.0)),
    "admit_p99_us": Goal("<= 20 us", _at_most(20.0)),
    "guard_prompt_p99_us_2kb": Goal("<= 200 us", _at_most(200.0)),
    "budget_propagation_p99_s": Goal("<= 1 s", _at_most(1.0)),
    "overspend_seconds": Goal("<= 1 s of fleet spend", _at_most(1.0)),
    "percentile_rel_err_max": Goal("<= 0.01", _at_most(0.01)),
    "rss_mb_end": Goal("< 1.10 x rss_mb_warm", _rss_growth),
    "throughput_drift_ratio": Goal(">= 0.95", _at_least(0.95)),
    # docs/design.md's figure for the chosen layout; OTLP ingest must keep at least half the worker's Avro rate.
    "decode_us_per_call_avro_batch": Goal("<= 2 us", _at_most(2.0)),
    "worker_otlp_vs_avro": Goal(">= 0.50", _at_least(0.50)),
    # issue #13: alert quality (bench/alerts.py)
    "alert_recall_min": Goal("100% for every kind", _at_least(1.0)),
    "pages_per_incident": Goal("<= 1.2", _at_most(1.2)),
    "false_pages_p0p1_per_day": Goal("0", _at_most(0.0)),
    "false_pages_p2_per_day": Goal("<= 1", _at_most(1.0)),
    "detect_delay_p95_s": Goal("<= 60 s (detection: first member alert)", _at_most(60.0)),
    "page_delay_p95_s": Goal("<= 60 s (the page itself; same goal, stricter reading)", _at_most(60.0)),
    # issue #19: always-valid A/B decisions (bench/ab_sequential.py)
    "ab_aa_false_positive_rate": Goal("<= 0.05 at alpha 0.05", _at_most(0.05)),
    "ab_power_quality_8_6pct": Goal(">= 0.80", _at_least(0.80)),
    "drift_detect_windows_max": Goal("<= 1 window", _at_most(1.0)),
    "resolve_delay_p95_s": Goal("<= 300 s after the end", _at_most(300.0)),
    # issue #16: cost per call flat in cardinality, bounded state (bench/cardinality.py), scale-out (bench/scaleout.py)
    "cardinality_ratio": Goal(">= 0.5", _at_least(0.5)),
    "cardinality_ratio_sdk_records": Goal(">= 0.5 (the same goal, records as the SDK sends them)", _at_least(0.5)),
    "state_bytes_per_series": Goal("<= 4 KiB", _at_most(4096.0)),
    "rss_growth_second_hour": Goal("< 5%", lambda value, _figures: value < 0.05),
    "scaleout_ratio_2_workers": Goal(">= 1.7 (2 cores)", _at_least(1.7)),
    "alert_latency_p99_s_80pct": Goal("<= 0.5 s", _at_most(0.5)),
}

# Every key the JSON must carry (null when a part was skipped or failed), in table order.
REQUIRED = (
    "raw_consume_eps", "decode_eps", "worker_eps", "faust_noop_eps",
    "worker_vs_raw", "worker_vs_decode", "worker_vs_faust_noop",
    "sketch_overhead_ratio", "metrics_overhead_ratio",
    "alert_latency_p50_s", "alert_latency_p99_s", "passthrough_p99_s",
    "sdk_emit_p50_us", "sdk_emit_p99_us", "sdk_emit_p99_us_broker_down",
    "percentile_rel_err_max",
    "rss_mb_warm", "rss_mb_end", "throughput_drift_ratio",
    "guard_us_per_event", "drift_us_per_event",
    "alert_recall_min", "pages_per_incident", "false_pages_p0p1_per_day", "false_pages_p2_per_day",
    "detect_delay_p95_s", "drift_detect_windows_max", "resolve_delay_p95_s", "drift_false_per_100_series_days",
    # issue #16
    "worker_eps_100_series", "worker_eps_10k_series", "cardinality_ratio", "scaleout_ratio_2_workers",
    "alert_latency_p99_s_80pct", "state_bytes_per_series", "rss_growth_second_hour",
    "prom_histogram_rel_err_max_default", "prom_histogram_rel_err_max_tuned",
    "worker_eps_100_series_sdk_records", "worker_eps_10k_series_sdk_records", "cardinality_ratio_sdk_records",
)


def verdicts(figures: Mapping[str, float | None]) -> dict[str, bool | None]:
    """key -> passed (None when the figure is missing)."""
    out: dict[str, bool | None] = {}
    for key, goal in GOALS.items():
        value = figures.get(key)
        out[key] = None if value is None else goal.check(value, figures)
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.3f}"
    return f"{value:.4g}"


def markdown(figures: Mapping[str, float | None], notes: Mapping[str, str], meta: Mapping[str, object],
             details: Mapping[str, Any] | None = None) -> str:
    passed = verdicts(figures)
    keys = list(REQUIRED) + sorted(k for k in figures if k not in REQUIRED)
    lines = [
        f"# llmpulse benchmarks ({meta.get('mode')})",
        "",
        f"{meta.get('generated_at')} · Python {meta.get('python')} · {meta.get('cpus')} CPUs · "
        f"broker {meta.get('broker')} · load average at start {meta.get('loadavg')}",
        "",
        "Shared, noisy machines: judge the ratios (measured in the same run against a baseline on the same "
        "data), not the absolute rates. Each figure is the median of three runs in alternating order unless "
        "its note says otherwise.",
        "",
        "| key | value | goal | pass | notes |",
        "| --- | ---: | --- | :---: | --- |",
    ]
    for key in keys:
        goal = GOALS.get(key)
        verdict = passed.get(key)
        mark = "" if goal is None else ("n/a" if verdict is None else ("pass" if verdict else "**FAIL**"))
        note = notes.get(key, "").replace("|", "/")
        lines.append(f"| `{key}` | {_fmt(figures.get(key))} | {goal.text if goal else ''} | {mark} | {note} |")
    lines += _alert_quality(details or {})
    errors = meta.get("errors") or {}
    if errors:
        lines += ["", "## Parts that did not run", ""]
        lines += [f"- `{group}`: {message}" for group, message in errors.items()]  # type: ignore[union-attr]
    hot = meta.get("hot_spots") or []
    if hot:
        lines += ["", "## Hot spots (bench/results/profile.txt)", "", "```"]
        lines += list(hot)  # type: ignore[arg-type]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def _alert_quality(details: Mapping[str, Any]) -> list[str]:
    """Per-kind recall and delays of bench/alerts.py, when that group ran."""
    kinds = details.get("alert_quality_by_kind")
    if not kinds:
        return []
    run = details.get("alert_quality_run", {})
    lines = ["", f"## Alert quality by kind ({run.get('variant')}, seed {run.get('seed')}, {run.get('schedule')})", "",
             "| kind | detected | detect p50 / p95 s | resolve p50 / p95 s | pages in its window |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for kind, k in kinds.items():
        lines.append(f"| {kind} | {k['detected']}/{k['injected']} | {_fmt(k['detect_delay_p50_s'])} / "
                     f"{_fmt(k['detect_delay_p95_s'])} | {_fmt(k['resolve_delay_p50_s'])} / "
                     f"{_fmt(k['resolve_delay_p95_s'])} | {_fmt(k.get('pages_in_window_mean'))} |")
    pages = run.get("incident_day_pages", {})
    lines += ["", f"Control-day pages by leading rule: {run.get('control_pages_by_rule')}. Incident-day pages: "
                  f"{pages.get('explained')} from incidents that detected an injected one, {pages.get('other')} "
                  f"others ({pages.get('other_by_rule')})."]
    return lines
