"""The columnar rule evaluation decides exactly what the per-series code decided.

Two partition engines take the same replay: the simulator's fleet in event time with every scenario of
producers/simulation/scenarios.py injected in turn (overlapping windows), ticked every 5 s, both restarted from
their persisted state halfway. The reference engine judges latency and traffic with the per-series ``observe``
code as it was before the rules moved to columns (copied below) and feeds the alert policy every observation, as
that code did; the other runs the engine as it is. Every record and tick must give identical alert events, and
the observations the columnar path builds must be exactly the reference's breached ones plus the clear ones of
incidents open at that moment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from bench.alert_fleet import Fleet, to_columns
from llmpulse.processors.core.alert_policy import AlertEvent, Observation, fingerprint
from llmpulse.processors.core.drift_monitor import DRIFT_RULES, DriftConfig
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.latency import QUANTILES, SERIES_LABELS, LatencyMonitor, window_label
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.significance import breaching_calls_needed
from llmpulse.processors.core.slots import series_key, series_parts
from llmpulse.processors.core.traffic import LABELS, TrafficMonitor
from llmpulse.processors.core.traffic import RULES as TRAFFIC_RULES
from llmpulse.producers.simulation.scenarios import SCENARIOS
from tests.support.persisted import persist

pytestmark = pytest.mark.unit

START_MS = 1_700_000_000_000
STEP_MS = 2_500  # one record per service every 2.5 s of event time
TICK_MS = 5_000
SCENARIO_EVERY_S, SCENARIO_FOR_S = 30.0, 90.0  # each scenario starts 30 s after the last and lasts 90 s


# ---- the per-series rules as they were (reference) -------------------------------------------------------
def reference_latency(monitor: LatencyMonitor, series: str, now_ms: int) -> list[Observation]:
    config = monitor.config
    sketch = monitor.window(series, config.alert_window_s, now_ms)
    count = sketch.count
    ranks = [(count - breaching_calls_needed(count, tail, config.breach_alpha, config.min_breaching_calls))
             / max(count - 1, 1) for tail in (0.05, 0.01)]
    _p50, p95, p99, guard95, guard99 = sketch.quantiles(
        (*QUANTILES, *(min(q, max(rank, 0.0)) for q, rank in zip((0.95, 0.99), ranks, strict=True)))
    ) if count else (np.nan,) * 5
    if count:
        guard95, guard99 = (g if rank >= 0 else np.nan for g, rank in zip((guard95, guard99), ranks, strict=True))
    labels = tuple(zip(SERIES_LABELS, series_parts(series), strict=True))
    window = window_label(config.alert_window_s)
    enough = count >= config.min_samples
    where = "/".join(series_parts(series))
    rules = (("latency_p95", "WARNING", p95, guard95, config.p95_warning_s),
             ("latency_p99", "CRITICAL", p99, guard99, config.p99_critical_s))
    return [
        Observation(rule, labels, severity if enough and min(value, guard) > threshold else None,
                    float(value) if enough else 0.0, threshold, window,
                    f"{rule[-3:]} latency {value:.2f}s over {window} for {where} (threshold {threshold:g}s)", now_ms)
        for rule, severity, value, guard, threshold in rules
    ]


def _failures(totals: dict[str, int]) -> tuple[int, float]:
    failed = totals["errors"] + totals["timeouts"] + totals["rate_limited"]
    return failed, failed / totals["requests"] if totals["requests"] else 0.0


def _per(totals: dict[str, int], column: str, per: str) -> float:
    return totals[column] / totals[per] if totals[per] else 0.0


def reference_traffic(monitor: TrafficMonitor, series: str, now_ms: int) -> list[Observation]:
    c = monitor.config

    def breaches(totals: dict[str, int], limit: float, recent_agrees: bool) -> bool:
        n = totals["requests"]
        failed, ratio = _failures(totals)
        return (recent_agrees and n >= c.min_requests and ratio >= limit
                and failed >= breaching_calls_needed(n, limit, c.breach_alpha, 1))

    t = monitor.totals(series, c.window_s, now_ms)
    short_s = min(c.active_window_s, c.window_s)
    r = monitor.totals(series, short_s, now_ms) if short_s < c.window_s else t
    labels = tuple(zip(LABELS, series_parts(series), strict=True))
    where = "/".join(series_parts(series))
    window, recent = window_label(c.window_s), window_label(short_s)
    n = t["requests"]
    enough = n >= c.min_requests
    out = []
    failed, ratio = _failures(t)
    _, ratio_now = _failures(r)
    severity = None
    for level, limit in (("CRITICAL", c.error_critical_ratio), ("WARNING", c.error_warning_ratio)):
        if breaches(t, limit, ratio_now >= limit) or breaches(r, limit, True):
            severity = level
            break
    out.append(Observation("error_rate", labels, severity, ratio, c.error_warning_ratio, window,
                           f"error rate {ratio:.1%} over {window}, {ratio_now:.1%} over the last {recent} for "
                           f"{where} ({failed}/{n}: {t['errors']} errors, {t['timeouts']} timeouts, "
                           f"{t['rate_limited']} rate-limited)", now_ms))
    per_request = _per(t, "cost_micros", "priced")
    expensive = per_request > c.cost_per_request_warning_micros and (
        not r["priced"] or _per(r, "cost_micros", "priced") > c.cost_per_request_warning_micros)
    out.append(Observation("cost_per_request", labels, "WARNING" if enough and expensive else None,
                           per_request / 1e6, c.cost_per_request_warning_micros / 1e6, window,
                           f"mean cost ${per_request / 1e6:.4f}/request over {window} for {where}", now_ms))
    no_answer = _per(t, "no_answer", "requests")
    evasive = no_answer > c.no_answer_warning_ratio and (
        not r["requests"] or _per(r, "no_answer", "requests") > c.no_answer_warning_ratio)
    out.append(Observation("no_answer_rate", labels, "WARNING" if enough and evasive else None,
                           no_answer, c.no_answer_warning_ratio, window,
                           f"'I don't know' rate {no_answer:.1%} over {window} for {where}", now_ms))
    tokens = _per(t, "tokens", "requests")
    severity, limit = None, c.token_average_limit
    if enough and c.token_average_warning and tokens > c.token_average_warning:
        severity, limit = "WARNING", c.token_average_warning
    elif enough and c.token_average_limit and tokens > c.token_average_limit:
        severity = "INFO"
    out.append(Observation("token_average", labels, severity, tokens, float(limit), window,
                           f"{tokens:.0f} tokens/request (prompt+response) over {window} for {where}", now_ms))
    for rule, column, limit, noun in (
        ("prompt_injection", "injection", c.injection_warning_count, "prompt-injection attempts"),
        ("hallucination", "hallucination", c.hallucination_warning_count, "unhedged high-risk claims"),
        ("pii_leak", "pii", c.pii_warning_count, "calls carrying PII"),
        ("unsafe_content", "toxic", c.unsafe_warning_count, "unsafe-content hits"),
    ):
        count = t[column]
        ongoing = count >= limit and r[column] > 0
        out.append(Observation(rule, labels, "WARNING" if ongoing else None, float(count), float(limit),
                               window, f"{count} {noun} over {window} for {where}", now_ms))
    return out


# ---- wiring ------------------------------------------------------------------------------------------------
Seen = list[tuple[list[Observation], set[str]]]  # observations handed to the policy, open fingerprints then


def _per_series(reference: Callable[[Any, str, int], list[Observation]], monitor: Any) -> Callable[..., Any]:
    def observe_series(series: Sequence[str], now_ms: int, _open_rules: Mapping[Any, Any] = {},
                       emit_all: bool = False) -> dict[int, list[Observation]]:
        return {i: reference(monitor, key, now_ms) for i, key in enumerate(series)}
    return observe_series


def _every_drift_rule(engine: PartitionEngine) -> None:
    observe = engine.drift.observe

    def all_rules(key: str, now_ms: int, force: bool = False, open_rules: object = None) -> list[Observation]:
        return observe(key, now_ms, force)
    engine.drift.observe = all_rules  # type: ignore[method-assign]


def _record_policy(engine: PartitionEngine, seen: Seen) -> None:
    """Wrap the (current) policy so each batch of observations is kept with the incidents open before it."""
    policy = engine.policy
    observe_many = policy.observe_many

    def recording(observations: Any) -> list[AlertEvent]:
        observations = list(observations)
        seen.append((observations, set(policy._open)))
        return observe_many(observations)
    policy.observe_many = recording  # type: ignore[method-assign]


def _engine(config: EngineConfig, reference: bool, seen: Seen) -> PartitionEngine:
    engine = PartitionEngine(0, config, Pricer(), GuardMonitor(config.guarding))
    if reference:
        engine.latency.observe_series = _per_series(reference_latency, engine.latency)  # type: ignore[method-assign]
        engine.traffic.observe_series = _per_series(reference_traffic, engine.traffic)  # type: ignore[method-assign]
        _every_drift_rule(engine)
    _record_policy(engine, seen)
    return engine


def _restarted(engine: PartitionEngine, persisted: dict[str, bytes], config: EngineConfig, reference: bool,
               seen: Seen) -> PartitionEngine:
    fresh = _engine(config, reference, seen)
    for key, blob in persisted.items():
        fresh.restore(key, blob)
    _record_policy(fresh, seen)  # the restored policy is a new object
    return fresh


COLUMNAR_RULES = {*LatencyMonitor.RULES, *TRAFFIC_RULES, *DRIFT_RULES}  # the rest pass through unchanged


def _expected(reference: list[Observation], open_before: set[str]) -> list[Observation]:
    return [o for o in reference if o.rule not in COLUMNAR_RULES or o.severity is not None
            or fingerprint(o.rule, o.labels) in open_before]


def test_columnar_rules_decide_as_the_per_series_rules_did() -> None:
    config = EngineConfig(drift=DriftConfig(reference_size=400, block_size=100, min_current=50))
    rng = np.random.default_rng(16)
    fleet = Fleet(40.0, rng)
    scenarios = [s.at(30.0 + k * SCENARIO_EVERY_S, SCENARIO_FOR_S) for k, s in enumerate(SCENARIOS.values())]
    duration_ms = int((30.0 + len(scenarios) * SCENARIO_EVERY_S + SCENARIO_FOR_S + 180.0) * 1000)
    seen_new: Seen = []
    seen_ref: Seen = []
    new, ref = _engine(config, False, seen_new), _engine(config, True, seen_ref)
    kept_new: dict[str, bytes] = {}
    kept_ref: dict[str, bytes] = {}
    events = 0
    rules_fired: set[str] = set()
    statuses: set[str] = set()
    restart_at = duration_ms // (2 * STEP_MS)
    for k in range(duration_ms // STEP_MS):
        t0, now_ms = k * STEP_MS / 1000.0, START_MS + (k + 1) * STEP_MS
        for _service, block in fleet.step(t0, t0 + STEP_MS / 1000.0, START_MS):
            for scenario in scenarios:
                scenario.apply(fleet.model, block, rng, START_MS, fleet.rate)
            calls = to_columns(block)
            a, b = new.process(calls, k, now_ms), ref.process(calls, k, now_ms)
            assert a.alerts == b.alerts, f"record {k}"
            events += len(a.alerts)
            rules_fired.update(e.rule for e in a.alerts)
            statuses.update(e.status for e in a.alerts)
        if (k + 1) * STEP_MS % TICK_MS == 0:
            a_tick, b_tick = new.tick(now_ms), ref.tick(now_ms)
            assert a_tick == b_tick, f"tick at {now_ms}"
            events += len(a_tick)
            statuses.update(e.status for e in a_tick)
        persist(new, kept_new)
        persist(ref, kept_ref)
        if k == restart_at:  # a worker restart: both rebuilt from what they persisted
            new = _restarted(new, kept_new, config, False, seen_new)
            ref = _restarted(ref, kept_ref, config, True, seen_ref)
    assert len(seen_new) == len(seen_ref)
    built = total = 0
    for (observations, open_new), (reference, open_ref) in zip(seen_new, seen_ref, strict=True):
        assert open_new == open_ref
        assert observations == _expected(reference, open_ref)
        assert all(o.fingerprint in ("", fingerprint(o.rule, o.labels)) for o in observations)
        built, total = built + len(observations), total + len(reference)
    # the replay must exercise the rules: incidents of many kinds open and resolve, most observations are skipped
    assert events >= 20
    assert {"latency_p95", "error_rate", "cost_per_request", "prompt_injection", "pii_leak"} <= rules_fired
    assert "resolved" in statuses
    print(f"events {events}, rules {sorted(rules_fired)}, observations built {built} of {total}")
    assert built < total / 2


# ---- the monitors alone: every series, every rule, at many moments --------------------------------------------
MONITOR_START_MS = 1_700_000_040_000
BEHAVIOURS = ("steady", "slow", "very_slow", "errors", "error_storm", "expensive", "evasive", "injected", "few",
              "goes_idle", "late_starter", "flapping")


def _batch(rng: np.random.Generator, behaviour: str, second: int) -> dict[str, np.ndarray] | None:
    """One second of calls of one series behaving as ``behaviour`` at ``second`` (None: no calls)."""
    if behaviour == "few" and second % 40:
        return None  # a call every 40 s: never min_samples in a minute
    if behaviour == "goes_idle" and second >= 200:
        return None
    if behaviour == "late_starter" and second < 250:
        return None
    on = (second // 60) % 2 == 1 if behaviour == "flapping" else 90 <= second < 330
    n = 1 if behaviour == "few" else int(rng.integers(1, 5))
    latency = rng.lognormal(np.log(600.0), 0.4, n)
    ttft = np.where(rng.random(n) < 0.6, latency * 0.3, np.nan)
    error_rate = 0.01
    if on and behaviour in ("slow", "flapping"):
        latency = latency * 4.5  # p95 over 2 s, p99 mostly under 5 s
    if on and behaviour == "very_slow":
        latency = np.where(rng.random(n) < 0.2, 9_000.0 + latency, latency * 3.0)
    if on and behaviour in ("errors", "flapping"):
        error_rate = 0.08
    if on and behaviour == "error_storm":
        error_rate = 0.4
    status = np.where(rng.random(n) < error_rate, np.where(rng.random(n) < 0.7, 1, 2), 0)
    cost = rng.integers(1_000, 9_000, n) * (4 if on and behaviour == "expensive" else 1)
    return {
        "latency_ms": latency, "ttft_ms": ttft,
        "requests": np.ones(n, dtype=bool), "denied": np.zeros(n, dtype=bool),
        "errors": status == 1, "timeouts": status == 2, "rate_limited": np.zeros(n, dtype=bool),
        "filtered": np.zeros(n, dtype=bool), "cache_hits": rng.random(n) < 0.1,
        "no_answer": rng.random(n) < (0.35 if on and behaviour == "evasive" else 0.02),
        "cost_micros": cost, "priced": rng.random(n) < 0.95,
        "tokens": rng.integers(50, 900, n), "injection": (rng.random(n) < 0.3) & on & (behaviour == "injected"),
        "hallucination": np.zeros(n, dtype=bool), "pii": np.zeros(n, dtype=bool), "toxic": np.zeros(n, dtype=bool),
    }


def _comparable(observations: list[Observation]) -> list[tuple[Any, ...]]:
    return [(o.rule, o.labels, o.severity, o.observed, o.threshold, o.window, o.summary, o.now_ms)
            for o in observations]


def test_columnar_monitors_judge_every_series_as_the_per_series_rules_at_every_moment() -> None:
    """Latency and traffic monitors fed the same mixed fleet, judged every 20 s of event time (and on the timer
    long after the last call): the columnar evaluation of all series at once gives, for every series, exactly the
    rule, severity, value and wording of the per-series reference; without ``emit_all`` it keeps exactly the
    breached rules plus the rules an incident holds open."""
    rng = np.random.default_rng(1616)
    config = EngineConfig()
    engine = PartitionEngine(0, config, Pricer(), GuardMonitor(config.guarding))
    latency, traffic = engine.latency, engine.traffic
    keys = [series_key((f"svc-{k:02d}", "gpt-4o", "openai")) for k in range(2 * len(BEHAVIOURS))]
    behaviour_of = dict(zip(keys, BEHAVIOURS * 2, strict=True))
    breached: set[tuple[str, str | None]] = set()
    too_few = judged = 0
    offset = 0
    for second in range(0, 420):
        now_ms = MONITOR_START_MS + second * 1000
        batches = [(i, b) for i, key in enumerate(keys) if (b := _batch(rng, behaviour_of[key], second)) is not None]
        if batches:
            inverse = np.concatenate([np.full(len(b["latency_ms"]), i) for i, b in batches])
            columns = {name: np.concatenate([b[name] for _, b in batches]) for name in batches[0][1]}
            stamps = now_ms - rng.integers(0, 1000, inverse.size)
            latency.update(keys, inverse, stamps, columns.pop("latency_ms"), columns.pop("ttft_ms"), offset, now_ms)
            traffic.update(keys, inverse, stamps, columns, offset, now_ms)
            offset += 1
        moments = [now_ms] if second % 20 == 19 else []
        if second == 419:
            moments += [now_ms + 45_000, now_ms + 200_000, now_ms + 400_000]  # timer ticks after the calls stop
        for moment in moments:
            for monitor, reference in ((latency, reference_latency), (traffic, reference_traffic)):
                series = monitor.series()
                everything = monitor.observe_series(series, moment, emit_all=True)
                expected = {i: reference(monitor, key, moment) for i, key in enumerate(series)}
                assert {i: _comparable(o) for i, o in everything.items()} == {
                    i: _comparable(o) for i, o in expected.items() if o}, f"at {moment}"
                # incidents held open on every other series' first and last rule
                held = {labels: frozenset({obs[0].rule, obs[-1].rule}) for i, obs in expected.items()
                        if i % 2 for labels in [tuple(sorted(obs[0].labels))]}
                chosen = monitor.observe_series(series, moment, held)
                assert {i: _comparable(o) for i, o in chosen.items()} == {
                    i: _comparable(kept) for i, obs in expected.items()
                    if (kept := [o for o in obs if o.severity is not None
                                 or o.rule in held.get(tuple(sorted(o.labels)), ())])}, f"at {moment}"
                for obs in expected.values():
                    breached.update((o.rule, o.severity) for o in obs if o.severity is not None)
                    judged += len(obs)
                    too_few += sum(o.rule == "latency_p95" and o.observed == 0.0 for o in obs)
    # the replay must reach every kind of decision the rules can take
    assert {("latency_p95", "WARNING"), ("latency_p99", "CRITICAL"), ("error_rate", "WARNING"),
            ("error_rate", "CRITICAL"), ("cost_per_request", "WARNING"), ("no_answer_rate", "WARNING"),
            ("token_average", "INFO"), ("prompt_injection", "WARNING")} <= breached
    assert too_few > 0 and judged > 1000


def _summary_by_merging(engine: PartitionEngine, now_ms: int) -> list[dict[str, Any]]:
    """What ``PartitionEngine.summary`` reported when it merged every series' sketches one series at a time."""
    rows = []
    for series in engine.latency.series():
        windows = {window_label(w): w for w in engine.config.latency.windows_s}
        row = {label: _quantiles(engine.latency.window(series, w, now_ms)) for label, w in windows.items()}
        row["ttft"] = {label: _quantiles(engine.latency.window(series, w, now_ms, ttft=True))
                       for label, w in windows.items()}
        row["totals"] = engine.traffic.totals(series, engine.config.traffic.window_s, now_ms)
        rows.append(row)
    return rows


def _quantiles(sketch: Any) -> dict[str, Any]:
    values = sketch.quantiles(QUANTILES)
    return {"count": sketch.count, **{f"p{int(q * 100)}": None if np.isnan(v) else float(v)
                                      for q, v in zip(QUANTILES, values, strict=True)}}


def test_the_summary_reads_every_series_as_merging_its_sketches_did() -> None:
    """/api/metrics and the latency gauges come from one columnar pass per window (window_quantiles); every
    series, latency and TTFT, every window, must read exactly as its merged sketches do, as calls age out too."""
    config = EngineConfig()
    rng = np.random.default_rng(7)
    fleet = Fleet(40.0, rng)
    engine = PartitionEngine(0, config, Pricer(), GuardMonitor(config.guarding))
    compared = 0
    for k in range(3 * 60_000 // STEP_MS):
        t0, now_ms = k * STEP_MS / 1000.0, START_MS + (k + 1) * STEP_MS
        for _service, block in fleet.step(t0, t0 + STEP_MS / 1000.0, START_MS):
            calls = to_columns(block)
            calls.ttft_ms[::3] = calls.latency_ms[::3] * 0.25  # a third streamed
            engine.process(calls, k, now_ms)
        if k % 20 == 19:
            for later_ms in (now_ms, now_ms + 45_000, now_ms + 400_000):  # windows with fewer calls, or none
                summary = engine.summary(later_ms)
                expected = _summary_by_merging(engine, later_ms)
                for row, reference in zip(summary, expected, strict=True):
                    assert {label: row[label] for label in row["ttft"]} == {
                        label: reference[label] for label in reference["ttft"]}
                    assert row["ttft"] == reference["ttft"]
                    assert row["rates"]["requests"] == reference["totals"]["requests"]
                    assert row["rates"]["cost_usd"] == reference["totals"]["cost_micros"] / 1e6
                compared += len(summary)
    assert compared > 100
