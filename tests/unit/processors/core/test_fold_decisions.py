"""Folding old slots (slots.py) changes no decision: two partition engines, one folding latency, TTFT and traffic
slots (the default) and one keeping every 10 s slot for the hour (``fold_s=0``), take the same 75 minutes of event
time: busy and sparse series, latency, error, cost and no-answer incidents before and after the first folds and the
hour rolling over, records up to 170 s late, the timer every 5 s, both restarted halfway from what they persisted.
Every record and tick must give the same alert events, and the summary the same 1 m and 5 m figures; the 1 h window
may only reach further back (by less than ``fold_s``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from llmpulse.processors.core.columns import STATUS_CODE, CallColumns
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.latency import LatencyConfig
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.traffic import TrafficConfig
from tests.support.persisted import persist

START_MS = 1_700_000_000_000
STEP_MS, TICK_MS, MINUTE_MS = 5_000, 5_000, 60_000
MINUTES = 75
# (service, model, provider), calls/s, and incidents: (kind, first minute, last minute)
SERIES: tuple[tuple[tuple[str, str, str], float, tuple[tuple[str, int, int], ...]], ...] = (
    (("svc-a", "gpt-4o", "openai"), 1.5, (("slow", 20, 26), ("slow", 61, 65))),
    (("svc-b", "gpt-4o-mini", "openai"), 1.2, (("errors", 30, 35), ("errors", 64, 68))),
    (("svc-c", "claude-3-haiku-20240307", "anthropic"), 0.6, (("expensive", 40, 46), ("evasive", 50, 56))),
    (("svc-d", "gpt-4o", "openai"), 0.4, (("slow", 14, 17), ("errors", 70, 73))),
    (("svc-e", "gpt-4o-mini", "openai"), 0.05, ()),
    (("svc-f", "claude-3-5-sonnet-20241022", "anthropic"), 0.1, (("slow", 33, 38),)),
)


def _calls(rng: np.random.Generator, stamps: list[int], which: list[int]) -> CallColumns:
    n = len(stamps)
    minute = [(t - START_MS) // MINUTE_MS for t in stamps]
    kinds = [{kind for kind, first, last in SERIES[s][2] if first <= m <= last} for s, m in zip(which, minute,
                                                                                                  strict=True)]
    latency = 300 * rng.lognormal(0, 0.4, n) * np.array([5.0 if "slow" in k else 1.0 for k in kinds])
    failed = rng.random(n) < np.array([0.2 if "errors" in k else 0.01 for k in kinds])
    output = rng.integers(20, 400, n)
    prompt = rng.integers(50, 2_000, n)
    cost = (prompt + 4 * output) * np.array([40 if "expensive" in k else 2 for k in kinds])
    none = np.full(n, None, dtype=object)
    labels = [SERIES[s][0] for s in which]
    return CallColumns(
        timestamp_ms=np.array(stamps, dtype=np.int64), service=np.array([lb[0] for lb in labels], dtype=object),
        provider=np.array([lb[2] for lb in labels], dtype=object), model=np.array([lb[1] for lb in labels],
                                                                                  dtype=object),
        status=np.where(failed, STATUS_CODE["error"], STATUS_CODE["ok"]).astype(np.int8), latency_ms=latency,
        ttft_ms=np.where(rng.random(n) < 0.5, latency * 0.3, np.nan), input_tokens=prompt.astype(np.int64),
        output_tokens=output.astype(np.int64), cached_tokens=np.zeros(n, dtype=np.int64),
        cost_micros=cost.astype(np.int64), confidence=rng.uniform(0.5, 1.0, n), cache_hit=rng.random(n) < 0.1,
        no_answer=rng.random(n) < np.array([0.4 if "evasive" in k else 0.02 for k in kinds]),
        error_type=np.where(failed, "server_error", None).astype(object), user_hash=none, experiment_id=none,
        variant=none, feature=none, prompt_text=none, response_text=none, event_id=none,
    )


def _records(rng: np.random.Generator) -> list[tuple[CallColumns, int]]:
    """(calls, now) of every record: one per 5 s of all series' calls, and a late one about every minute."""
    out = []
    rates = np.array([rate for _labels, rate, _incidents in SERIES])
    for step in range(MINUTES * MINUTE_MS // STEP_MS):
        now = START_MS + (step + 1) * STEP_MS
        counts = rng.poisson(rates * STEP_MS / 1000)
        which = np.repeat(np.arange(len(SERIES)), counts)
        stamps = rng.integers(now - STEP_MS, now, which.size)
        order = np.argsort(stamps, kind="stable")
        if which.size:
            out.append((_calls(rng, stamps[order].tolist(), which[order].tolist()), now))
        if step % 12 == 11:  # a record held back 20-170 s (an SDK that flushed late)
            late = rng.integers(0, len(SERIES), 3).tolist()
            lag = int(rng.integers(20_000, 170_000))
            out.append((_calls(rng, sorted(rng.integers(now - lag - STEP_MS, now - lag, 3).tolist()), late), now))
    return out


def _engine(config: EngineConfig, persisted: dict[str, bytes] | None = None) -> PartitionEngine:
    engine = PartitionEngine(0, config, Pricer(), GuardMonitor(config.guarding))
    for key in sorted(persisted or {}):  # in key order, as a store iterates its table
        engine.restore(key, persisted[key])  # type: ignore[index]
    return engine


def test_folded_slots_change_no_decision_and_no_window_but_the_hours_far_edge() -> None:
    folding = EngineConfig()
    plain = replace(folding, latency=replace(folding.latency, fold_s=0), traffic=replace(folding.traffic, fold_s=0))
    assert isinstance(folding.latency, LatencyConfig) and isinstance(folding.traffic, TrafficConfig)
    engines = [_engine(folding), _engine(plain)]
    kept: list[dict[str, bytes]] = [{}, {}]
    records = _records(np.random.default_rng(16))
    fired: set[str] = set()
    next_tick = START_MS + TICK_MS
    for offset, (calls, now) in enumerate(records):
        while next_tick <= now:
            ticked = [engine.tick(next_tick) for engine in engines]
            assert ticked[0] == ticked[1], f"tick at {next_tick}"
            fired.update(f"{e.rule} {e.status}" for e in ticked[0])
            if (next_tick - START_MS) % (5 * MINUTE_MS) == 0:
                _same_summary(engines, next_tick)
            next_tick += TICK_MS
        outcomes = [engine.process(calls, offset, now) for engine in engines]
        assert outcomes[0].alerts == outcomes[1].alerts, f"record {offset}"
        fired.update(f"{e.rule} {e.status}" for e in outcomes[0].alerts)
        for engine, store in zip(engines, kept, strict=True):
            persist(engine, store)
        if offset == len(records) // 2:  # a worker restart: both rebuilt from what they persisted
            assert any("+" in key for key in kept[0])
            engines = [_engine(folding, kept[0]), _engine(plain, kept[1])]
    _same_summary(engines, next_tick)
    assert {f"{rule} {status}" for rule in ("latency_p95", "error_rate", "cost_per_request", "no_answer_rate")
            for status in ("firing", "resolved")} <= fired  # incidents open and resolve, before and after folds
    slots = [sum(len(blob) for key, blob in store.items() if key.split("/")[0] in ("latency", "ttft", "traffic"))
             for store in kept]
    assert slots[0] < slots[1] / 2


def _same_summary(engines: list[PartitionEngine], now_ms: int) -> None:
    folded, plain = ({(r["service"], r["model"], r["provider"]): r for r in engine.summary(now_ms)}
                     for engine in engines)
    assert folded.keys() == plain.keys()
    for key, a in folded.items():
        b = plain[key]
        assert a["rates"] == b["rates"]
        for row_a, row_b in ((a, b), (a["ttft"], b["ttft"])):
            assert (row_a["1m"], row_a["5m"]) == (row_b["1m"], row_b["5m"])
            assert row_a["1h"]["count"] >= row_b["1h"]["count"]
