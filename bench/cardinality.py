"""Cost per call against cardinality (in process and through the real worker), and bounded state over an
accelerated event-time replay (in process).

* ``inprocess_eps_100_series`` / ``inprocess_eps_10k_series``: decode + ``PartitionEngine.process`` + metrics
  export (bench/inprocess.py's Pipeline) on the same realistic calls, once spread over ~100 (service, model,
  provider) series and 100 users, once over ~10,000 series and 10,000 users; fed side by side in small chunks,
  the order alternating, so a neighbour's load slows both alike. ``inprocess_cardinality_ratio`` = the second /
  the first.
* ``worker_eps_100_series`` / ``worker_eps_10k_series`` (``worker_run``, needs Kafka): the real worker subprocess
  (bench/throughput.py's ``worker_run``, timed by its fleet summaries) draining the same calls, spread the same two
  ways, from two pre-loaded topics; the runs alternate (100, 10k, 10k, 100, ...) and each figure is the median.
  ``cardinality_ratio`` = worker_eps_10k_series / worker_eps_100_series. Each service's calls are packed in
  records of up to 500 there, so at ~10,000 series a record holds a service's ~40 calls.
* ``worker_eps_<n>_series_sdk_records`` and ``cardinality_ratio_sdk_records``: the same, alternated with those runs,
  on the same calls in records as the services' SDKs send them (``dataset.sdk_records``, the SDK's defaults), ~75
  calls a record at ~100 series and ~5 at ~10,000: what a fleet of quiet services sends.
* ``state_written_bytes_per_call_<n>_series``: the state an engine writes per call when each record is a group of
  its own (a worker below its top rate), the ledgers held as the worker holds them; beside it in the note, the same
  with the ledgers written after every group.
* The replay: one partition engine driven in event time for more than two hours (the 1-hour window fills and
  rolls), ``series`` series and as many users, a record per 500 calls, the 5 s timer ticking; RSS after the first
  and the second hour gives ``rss_growth_second_hour``; the state it persisted (latency and TTFT slots, traffic
  slots, drift), over the series active at the end, gives ``state_bytes_per_series``.
"""

from __future__ import annotations

import gc
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench import dataset, throughput
from bench.common import FULL, GroupResult, Scale, alternated_runs, alternating, medians, now_ms, ratio
from bench.inprocess import Pipeline
from llmpulse.processors import configure
from llmpulse.processors.clock import TICK_SECONDS
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.settings import ProcessorSettings

FIGURES = ("inprocess_eps_100_series", "inprocess_eps_10k_series", "inprocess_cardinality_ratio",
           "timer_ms_100_series", "timer_ms_10k_series", "state_bytes_per_series", "rss_growth_second_hour",
           "replay_wall_s", "state_written_bytes_per_call_100_series", "state_written_bytes_per_call_10k_series")
QUIET_TICKS = 6  # timer_ms: ticks measured after the calls, no call between them
SDK_SUFFIX = "_sdk"  # the variants whose records are as the SDK sends them (``sdk_spread_records``)
WORKER_FIGURES = ("worker_eps_100_series", "worker_eps_10k_series", "cardinality_ratio", "metrics_scrape_s_100_series",
                  "metrics_scrape_s_10k_series", "worker_eps_100_series_sdk_records",
                  "worker_eps_10k_series_sdk_records", "cardinality_ratio_sdk_records")
SCRAPES = 4  # /metrics reads after each worker run (metrics_scrape_s_*)
SPREADS = {"100": 100, "10k": 10_000}  # name -> (service, model, provider) series, and as many users
WORKER_CALLS = 100_000  # both modes: the calls per record (the shape that sets the cost) stay the same
QUICK_WORKER_MAX_S = 8.0  # quick mode stops a run after this much processing (the 10k variant is the slow one)
STATE_NAMESPACES = ("latency", "ttft", "traffic", "drift")
HOUR_MS = 3_600_000
TICK_MS = int(TICK_SECONDS * 1000)
REPLAY_START_MS = 1_700_000_000_000
CALLS_PER_RECORD = 500
MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet-20241022"),
          ("anthropic", "claude-3-haiku-20240307"))


@dataclass(frozen=True, slots=True)
class ReplayScale:
    series: int
    calls_per_series_s: float  # event-time rate per series
    hours: float = 2.25


QUICK_REPLAY = ReplayScale(series=1_000, calls_per_series_s=0.05)
FULL_REPLAY = ReplayScale(series=10_000, calls_per_series_s=0.05)


def spread(rows: list[dict[str, Any]], series: int, users: int, seed: int = 16) -> list[dict[str, Any]]:
    """The same calls over ~``series`` (service, model, provider) series and ``users`` users: services renamed
    so that services x the rows' (model, provider) pairs ~ ``series``."""
    rng = np.random.default_rng(seed)
    pairs = len({(row["request_model"], row["provider"]) for row in rows})
    services = max(1, round(series / pairs))
    service_of = rng.integers(0, services, len(rows)).tolist()
    user_of = rng.integers(0, users, len(rows)).tolist()
    return [{**row, "service": f"svc-{service_of[i]:05d}", "user_hash": f"user-{user_of[i]:05d}"}
            for i, row in enumerate(rows)]


def spread_records(rows: list[dict[str, Any]]) -> dict[str, list[tuple[bytes, bytes, int]]]:
    """The rows spread each way of ``SPREADS``, each service's calls packed in records of up to 500 (keyed by
    service): at ~10,000 series a record holds a service's ~40 calls over the topic's ~10 s of event time, where its
    SDK would have sent ~40 records of one call (``sdk_spread_records``)."""
    return {name: dataset.batch_records(spread(rows, series, series)) for name, series in SPREADS.items()}


def sdk_spread_records(rows: list[dict[str, Any]]) -> dict[str, list[tuple[bytes, bytes, int]]]:
    """The rows spread each way of ``SPREADS``, in records as each service's SDK sends them (``dataset.sdk_records``,
    the SDK's defaults): ~75 calls a record at ~100 series, ~5 at ~10,000 (~40 and ~1.2 before the SDK waited for
    ``batch_min_calls``)."""
    return {f"{name}{SDK_SUFFIX}": dataset.sdk_records(spread(rows, series, series))
            for name, series in SPREADS.items()}


def side_by_side(records: dict[str, list[bytes]], chunk: int = 16) -> dict[str, float]:
    """Calls/s of one pipeline per record set, fed alternately ``chunk`` records at a time."""
    pipelines = {name: Pipeline() for name in records}
    spent = dict.fromkeys(records, 0.0)
    accepted = dict.fromkeys(records, 0)
    names = list(records)
    longest = max(len(values) for values in records.values())
    for turn, start in enumerate(range(0, longest, chunk)):
        for name in names[turn % len(names):] + names[: turn % len(names)]:
            part = records[name][start : start + chunk]
            if part:
                began = time.perf_counter()
                accepted[name] += pipelines[name].feed(part, first_offset=start)
                spent[name] += time.perf_counter() - began
    return {name: accepted[name] / spent[name] for name in names}


def state_written(values: list[bytes], held_s: float | None = None) -> tuple[float, float, str]:
    """State bytes written per call with one record a group: with the ledgers held ``held_s`` (default: as the
    worker holds them), with them written after every group, and the first's three largest namespaces."""
    per_call = []
    for every_s in (held_s, 0.0):
        pipeline = Pipeline(ledger_every_s=every_s)
        accepted = sum(pipeline.feed([value], first_offset=offset) for offset, value in enumerate(values))
        per_call.append((sum(pipeline.written.values()) / accepted, pipeline.written, accepted))
    (held, written, accepted), (every_group, _, _) = per_call
    largest = ", ".join(f"{ns} {size / accepted:,.0f}" for ns, size in written.most_common(3))
    return held, every_group, largest


def timer_ms(values: list[bytes]) -> list[float]:
    """Milliseconds of each of ``QUIET_TICKS`` timer ticks (processors/agents/ticks.py: ``PartitionEngine.tick``,
    then the gauges' refresh, here every tick rather than paced to a share of the worker's time) over an engine
    that has absorbed ``values``, with no call between the ticks: what a worker pays per tick to hold its series."""
    pipeline = Pipeline()
    for start in range(0, len(values), 16):
        pipeline.feed(values[start : start + 16], first_offset=start)
    engine, exporter, now = pipeline.engine, pipeline.exporter, now_ms()
    assert exporter is not None
    spent = []
    for tick in range(QUIET_TICKS):
        at = now + tick * TICK_MS
        began = time.perf_counter()
        engine.tick(at)
        exporter.refresh_now([engine], None, at)
        spent.append((time.perf_counter() - began) * 1000.0)
    return spent


def _rss_bytes() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    import resource

    return int(fields[1]) * resource.getpagesize()


def _columns(rng: np.random.Generator, timestamps: np.ndarray, series: np.ndarray, users: int,
             services: np.ndarray, models: np.ndarray, providers: np.ndarray, user_names: np.ndarray) -> CallColumns:
    n = timestamps.size
    output = np.clip(rng.lognormal(4.5, 0.9, n), 1, 8_000).astype(np.int64)
    prompt = np.clip(rng.lognormal(6.0, 1.0, n), 1, 100_000).astype(np.int64)
    latency = 200 * rng.lognormal(0, 0.3, n) + output * 20 * rng.lognormal(0, 0.2, n)
    status = np.where(rng.random(n) < 0.01, 1, 0).astype(np.int8)
    model_of = series % len(MODELS)
    service_of = series // len(MODELS)
    none = np.full(n, None, dtype=object)
    return CallColumns(
        timestamp_ms=timestamps, service=services[service_of], provider=providers[model_of],
        model=models[model_of], status=status, latency_ms=latency, ttft_ms=latency * 0.3,
        input_tokens=prompt, output_tokens=output, cached_tokens=np.zeros(n, dtype=np.int64),
        cost_micros=(prompt + 4 * output) * 2, confidence=rng.uniform(0.5, 1.0, n), cache_hit=rng.random(n) < 0.1,
        no_answer=rng.random(n) < 0.02, error_type=np.where(status == 1, "server_error", None).astype(object),
        user_hash=user_names[rng.integers(0, users, n)], experiment_id=none, variant=none, feature=none,
        prompt_text=none, response_text=none, event_id=none,
        codes={"service": (service_of.astype(np.int32), np.append(services, None)),
               "model": (model_of.astype(np.int32), np.append(models, None)),
               "provider": (model_of.astype(np.int32), np.append(providers, None))},
    )


def _persisted_bytes(engine: PartitionEngine) -> dict[str, int]:
    """Bytes per namespace of ``STATE_NAMESPACES`` that the changelog holds for the keys alive now, each as
    KeyedState persisted it (an 8-byte offset stamp, then ``to_bytes()``; everything is drained, so the last blob
    of a key is its object's bytes now). Measured at the end rather than by keeping every key's size through the
    replay: that table (~100,000 keys) is memory the worker does not hold, and would count in its RSS."""
    states = {state.namespace: state for state in (engine.latency.latency.state, engine.latency.ttft.state,
                                                   engine.traffic.slots.state, engine.drift.state)}
    return {ns: sum(8 + len(item.to_bytes()) for _key, item in states[ns].items()) for ns in STATE_NAMESPACES}


def replay(scale: ReplayScale, seed: int = 16) -> dict[str, float]:
    """Event-time replay of ``scale``; RSS after each hour, persisted state per active series, wall time."""
    settings = ProcessorSettings()
    config = configure.engine_config(settings)
    engine = PartitionEngine(0, config, Pricer(), GuardMonitor(config.guarding))
    rng = np.random.default_rng(seed)
    services = np.array([f"svc-{k:05d}" for k in range(-(-scale.series // len(MODELS)))], dtype=object)
    models = np.array([m for _, m in MODELS], dtype=object)
    providers = np.array([p for p, _ in MODELS], dtype=object)
    user_names = np.array([f"user-{k:05d}" for k in range(scale.series)], dtype=object)
    rss: dict[int, int] = {}
    began = time.perf_counter()
    offset = 0
    end_ms = REPLAY_START_MS + int(scale.hours * HOUR_MS)
    per_tick = scale.series * scale.calls_per_series_s * TICK_MS / 1000
    now_ms = REPLAY_START_MS
    while now_ms < end_ms:
        n = int(rng.poisson(per_tick))
        stamps = np.sort(rng.integers(now_ms, now_ms + TICK_MS, n)).astype(np.int64)
        series = rng.integers(0, scale.series, n)
        for start in range(0, n, CALLS_PER_RECORD):
            part = slice(start, start + CALLS_PER_RECORD)
            calls = _columns(rng, stamps[part], series[part], scale.series, services, models, providers, user_names)
            engine.process(calls, offset, int(stamps[part][-1]))
            offset += 1
        now_ms += TICK_MS
        engine.tick(now_ms)
        engine.drain_state()  # as the worker does after each group of records (the blobs go to the changelog)
        hour = (now_ms - REPLAY_START_MS) // HOUR_MS
        if hour in (1, 2) and hour not in rss:
            gc.collect()
            rss[hour] = _rss_bytes()
    wall = time.perf_counter() - began
    active = len(engine.latency.series())
    state = _persisted_bytes(engine)
    return {"rss_1h_mb": rss.get(1, 0) / 2**20, "rss_2h_mb": rss.get(2, 0) / 2**20, "active_series": active,
            "state_bytes": sum(state.values()), **{f"state_bytes_{ns}": v for ns, v in state.items()},
            "calls": float(offset), "wall_s": wall}


def run(quick: bool) -> GroupResult:
    result = GroupResult()
    calls = 60_000 if quick else 400_000
    rows = dataset.realistic_rows(calls)
    records = {name: [value for _, value, _ in packed] for name, packed in spread_records(rows).items()}
    rates = [side_by_side(records) for _ in range(3)]
    few = float(np.median([r["100"] for r in rates]))
    many = float(np.median([r["10k"] for r in rates]))
    sizes = {name: calls / len(values) for name, values in records.items()}
    method = (f"in process (decode + PartitionEngine.process + MetricsExporter, no broker), {calls:,} realistic "
              f"calls spread over ~100 series/100 users and ~10,000 series/10,000 users, records keyed by service "
              f"({sizes['100']:.0f} and {sizes['10k']:.0f} calls per record), fed alternately 16 records at a time, "
              "median of 3 rounds")
    result.put("inprocess_eps_100_series", few, method)
    result.put("inprocess_eps_10k_series", many, method)
    result.put("inprocess_cardinality_ratio", many / few,
               "inprocess_eps_10k_series / inprocess_eps_100_series (same run; the worker's is cardinality_ratio)")
    timer = {name: timer_ms(values) for name, values in records.items()}
    for name in records:
        result.put(f"timer_ms_{name}_series", float(np.median(timer[name])),
                   f"one {TICK_SECONDS:g} s timer tick once the same calls are in, in process: "
                   f"PartitionEngine.tick (every series' rules) and MetricsExporter.refresh_now (window gauges of "
                   f"the series they hold, the health score per service), {QUIET_TICKS} "
                   f"ticks {TICK_SECONDS:g} s apart with no call between them, median; ticks (ms): "
                   + " / ".join(f"{ms:.0f}" for ms in timer[name]))
    for name, values in records.items():
        written, every_group, by_namespace = state_written(values)
        result.put(f"state_written_bytes_per_call_{name}_series", written,
                   f"state bytes an engine writes per call at one record a group (a worker below its top rate), in "
                   f"process, the same records as above ({sizes[name]:.0f} calls each, "
                   f"{sum(map(len, values)) / calls:.0f} bytes a call on the wire); most: {by_namespace}; with the "
                   f"ledgers written after every group too (ledger_checkpoint_s 0): {every_group:,.0f}")
    scale = QUICK_REPLAY if quick else FULL_REPLAY
    # in a fresh process: RSS is the replay's own, not the suite's (whose earlier groups would dilute the growth)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        figures = pool.submit(replay, scale).result()
    replayed = (f"event-time replay of {scale.hours:g} h, {scale.series:,} series and {scale.series:,} users at "
                f"{scale.calls_per_series_s:g} calls/s per series ({figures['calls']:,.0f} records of <= "
                f"{CALLS_PER_RECORD}), 5 s ticks, in {figures['wall_s']:.0f} s of wall time")
    per_series = figures["state_bytes"] / max(figures["active_series"], 1)
    parts = ", ".join(f"{ns} {figures[f'state_bytes_{ns}'] / max(figures['active_series'], 1):,.0f}"
                      for ns in STATE_NAMESPACES)
    result.put("state_bytes_per_series", per_series,
               f"persisted bytes of every window's state per active series ({parts}); {replayed}")
    result.put("rss_growth_second_hour", figures["rss_2h_mb"] / figures["rss_1h_mb"] - 1.0,
               f"RSS {figures['rss_1h_mb']:.0f} MB after the first hour -> {figures['rss_2h_mb']:.0f} MB after the "
               f"second, in a process of its own; {replayed}")
    result.put("replay_wall_s", figures["wall_s"], replayed)
    return result


def worker_run(scale: Scale, bootstrap: str, tag: str) -> GroupResult:
    """The real worker on the same ``WORKER_CALLS`` calls at ~100 and at ~10,000 series, runs alternated."""
    result = GroupResult()
    rows = dataset.realistic_rows(WORKER_CALLS)
    records = {**spread_records(rows), **sdk_spread_records(rows)}
    topics = {name: f"{tag}-card-{name}" for name in records}
    for name, topic in topics.items():
        dataset.preload(bootstrap, topic, records[name])
    max_s = None if scale.name == FULL.name else QUICK_WORKER_MAX_S
    timed: dict[str, list[int]] = {name: [] for name in records}
    scraped: dict[str, list[tuple[float, float, int]]] = {name: [] for name in records}
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:

        def drain(name: str) -> float:
            run = throughput.worker_run(bootstrap, topics[name], len(records[name]), WORKER_CALLS, tag, Path(tmp),
                                        max_s=max_s, scrapes=0 if name.endswith(SDK_SUFFIX) else SCRAPES)
            timed[name].append(int(run["records_timed"]))
            scraped[name] += run["scrapes"]
            return float(run["eps"])

        samples = alternating({name: partial(drain, name) for name in records}, scale.rounds)
    mid = medians(samples)
    sizes = {name: WORKER_CALLS / len(values) for name, values in records.items()}
    coverage = "; ".join(f"{name}: {min(done)}-{max(done)} of {len(records[name])} records timed"
                         for name, done in timed.items())
    cap = "every record" if max_s is None else f"stopped after {max_s:g} s of processing"
    spread = (f"~100 series/100 users and ~10,000 series/10,000 users, records keyed by service ({sizes['100']:.0f} "
              f"and {sizes['10k']:.0f} calls per record)")
    method = (f"llmpulse worker subprocess draining {WORKER_CALLS:,} realistic calls from a pre-loaded topic, spread "
              f"over {spread}; first to last record processed ({cap}; {coverage}), timed by its fleet summaries' "
              f"send stamps (as worker_eps); {alternated_runs(samples)}")
    result.put("worker_eps_100_series", mid["100"], method)
    result.put("worker_eps_10k_series", mid["10k"], method)
    result.put("cardinality_ratio", ratio(mid["10k"], mid["100"]),
               "worker_eps_10k_series / worker_eps_100_series: the real worker, same calls, same run "
               "(the in-process pipeline's is inprocess_cardinality_ratio)")
    sdk = SDK_SUFFIX
    sdk_method = (f"as worker_eps_<n>_series, the same calls in records as each service's SDK sends them with its "
                  f"defaults (dataset.sdk_records: {sizes['100' + sdk]:.1f} and {sizes['10k' + sdk]:.1f} calls per "
                  f"record), alternated with those runs; {alternated_runs(samples)}")
    result.put("worker_eps_100_series_sdk_records", mid["100" + sdk], sdk_method)
    result.put("worker_eps_10k_series_sdk_records", mid["10k" + sdk], sdk_method)
    result.put("cardinality_ratio_sdk_records", ratio(mid["10k" + sdk], mid["100" + sdk]),
               "worker_eps_10k_series_sdk_records / worker_eps_100_series_sdk_records (same run)")
    for name in SPREADS:
        costs = scraped[name]
        walls, cpus, sizes = (np.array(column, dtype=np.float64) for column in zip(*costs, strict=True))
        result.put(f"metrics_scrape_s_{name}_series", float(np.median(walls)),
                   f"GET /metrics of the worker just after each of its runs above, {SCRAPES} times in a row: median "
                   f"of {walls.size} (wall {walls.min():.2f}-{walls.max():.2f} s; the worker's CPU "
                   f"{np.nanmedian(cpus):.2f} s; {np.median(sizes) / 1e6:.1f} MB); computed and written on the "
                   "worker's event loop, so no call is processed meanwhile")
    return result
