"""A long steady run against one worker: memory and throughput over time (full mode only).

``LiveTraffic`` offers half the worker's measured top rate with keys spread over 2,500 services x 4 models
(10,000 series) and 10,000 users; each 100 ms tick uses 4 services in turn, so records stay SDK-sized while
every key recurs about once a minute. RSS is read from /proc after the warm-up and at the end; throughput
is the worker's processed-calls counter (scraped every 15 s) over the first and last minute after warm-up.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import dataset, workerproc
from bench.common import GroupResult, ratio
from bench.traffic import TICK_S, LiveTraffic

SERVICES, MODELS, USERS = 2_500, 4, 10_000
SERVICES_PER_TICK = 4
SAMPLE_S = 15.0  # a Prometheus-like scrape period: each scrape refreshes every gauge


def spreader(rate: float, models: list[tuple[str, str]]) -> Any:
    per_tick = max(1, int(rate * TICK_S))

    def reshape(row: dict[str, Any], index: int) -> None:
        tick = index // per_tick
        row["service"] = f"svc-{(tick * SERVICES_PER_TICK + index % SERVICES_PER_TICK) % SERVICES:04d}"
        row["provider"], row["request_model"] = models[index % len(models)]
        row["user_hash"] = f"user-{index % USERS:05d}"

    return reshape


def skipped(reason: str) -> GroupResult:
    result = GroupResult()
    for key in ("rss_mb_warm", "rss_mb_end", "throughput_drift_ratio"):
        result.put(key, None, reason)
    return result


def run(bootstrap: str, tag: str, max_worker_eps: float, duration_s: float, warmup_s: float = 60.0) -> GroupResult:
    result = GroupResult()
    rate = 0.5 * max_worker_eps
    pool = dataset.realistic_rows(20_000, seed=21)
    models = sorted({(row["provider"], row["request_model"]) for row in pool})[:MODELS]
    app_id = f"{tag}-steady-{uuid.uuid4().hex[:6]}"
    calls_topic = f"{tag}-{app_id}-calls"
    dataset.create_topics(bootstrap, [calls_topic])
    samples: list[tuple[float, float]] = []  # (seconds since traffic start, processed calls)
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        worker = workerproc.launch(bootstrap, Path(tmp), app_id, calls_topic, tag,
                                   {"LLMPULSE_TOPIC_ALERTS": f"{tag}-{app_id}-alerts"})
        traffic = None
        try:
            workerproc.wait_ready(worker)
            traffic = LiveTraffic(bootstrap, calls_topic, rate, pool, spreader(rate, models))
            traffic.start()
            started = time.monotonic()
            rss_warm = None
            while (elapsed := time.monotonic() - started) < duration_s:
                time.sleep(SAMPLE_S)
                samples.append((time.monotonic() - started, workerproc.processed(worker) or 0.0))
                if rss_warm is None and elapsed >= warmup_s:
                    rss_warm = workerproc.rss_mb(worker)
            rss_end = workerproc.rss_mb(worker)
            lag = traffic.sent_calls - samples[-1][1]
        finally:
            if traffic is not None:
                traffic.stop()
            worker.stop()
    first = _rate_over(samples, warmup_s, warmup_s + 60.0)
    last = _rate_over(samples, duration_s - 60.0, duration_s)
    note = (f"{duration_s / 60:.3g} min at {rate:,.0f} calls/s offered (50% of max worker rate); "
            f"{SERVICES * MODELS:,} service/model series, {USERS:,} users; warm-up {warmup_s:.0f} s")
    result.put("rss_mb_warm", rss_warm, note)
    result.put("rss_mb_end", rss_end, "VmRSS from /proc at the end")
    result.put("rss_growth_ratio", ratio(rss_end, rss_warm), "end / warm; latency windows span 1 h, so state grows")
    result.put("throughput_drift_ratio", ratio(last, first), "processed calls/s, last minute / first minute")
    result.put("stability_lag_end_calls", lag, "calls produced but not yet processed at the end")
    return result


def _rate_over(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    inside = [(t, n) for t, n in samples if t0 <= t <= t1]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
