"""Calls per second through four consumers of the same pre-loaded topic, each in a fresh consumer group.

* ``raw``: confluent-kafka ``consume(num_messages=500)`` doing nothing (the ceiling of the client);
* ``decode``: the same plus ``CallDecoder.decode`` per record (the worker's first step);
* ``worker``: a real ``llmpulse worker`` subprocess, watched on /metrics until it has processed every call;
* ``faust_noop``: a faust-streaming agent doing nothing, on a topic with one call per record (the design
  we did not choose: what per-record framework overhead alone allows).

Rates run from the first call seen to the last, so start-up and group joins are excluded (start-up is
reported separately for the worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError

from bench import dataset, workerproc
from bench.common import (
    GroupResult,
    Scale,
    alternating,
    describe,
    medians,
    now_ms,
    rate_between,
    ratio,
    summarized_rate,
)
from bench.traffic import SummaryProgress, TopicWatcher
from llmpulse.processors import configure
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.wire.calls import CallDecoder

RUN_TIMEOUT_S = 600.0


def build_decoder(settings: ProcessorSettings | None = None) -> CallDecoder:
    """A decoder configured exactly as processors/app.py builds the worker's."""
    s = settings or ProcessorSettings()
    v = s.validation
    return CallDecoder(configure.validation_limits(s), v.max_record_bytes, v.max_calls_per_batch)


def consume_rate(bootstrap: str, topic: str, total_records: int, total_calls: int, decode: bool) -> float:
    """Drain ``topic`` in a fresh group; calls/s from the first consume() that returned data to the last."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 * 1024 * 1024})
    consumer.subscribe([topic])
    decoder = build_decoder() if decode else None
    seen, records, first = 0, 0, None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    batch = 1  # until data flows: the clock starts once the group is joined and the first fetch is in
    try:
        while records < total_records and time.monotonic() < deadline:
            # Never ask for more than is left: consume() would wait out its timeout for the rest.
            for message in consumer.consume(num_messages=min(batch, total_records - records), timeout=1.0):
                if message.error() is not None:
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(message.error())
                    continue
                records += 1
                if decoder is not None:
                    calls, _refused = decoder.decode(message.value(), now_ms())
                    seen += len(calls) if calls is not None else 0
                else:
                    seen += total_calls // total_records  # the raw loop never looks inside
            if first is None and seen:
                first, batch = (time.perf_counter(), seen), 500
        last = (time.perf_counter(), seen)
    finally:
        consumer.close()
    if records < total_records or first is None:
        raise RuntimeError(f"drained {records} of {total_records} records from {topic}")
    return rate_between(first, last)


def worker_run(bootstrap: str, topic: str, records: int, calls: int, tag: str, workdir: Path,
               extra_env: dict[str, str] | None = None, max_s: float | None = None,
               scrapes: int = 0) -> dict[str, Any]:
    """Start a worker on the pre-loaded topic; rate from its first processed record to its last.

    Timed by the worker's fleet summaries (one per run of records, producer-stamped when sent; each names its
    run's last offset, so it tells how many records it covers) rather than by
    scraping /metrics at a high rate: each scrape refreshes every gauge, ~15 ms of the worker's CPU, which
    at 20 Hz would slow it by a quarter. /metrics is read once at the end to confirm the processed count.
    With ``max_s`` the run stops once that many seconds of processing are stamped; the rate then covers the
    records stamped so far, at the topic's mean calls per record (a time cap for slow variants). With ``scrapes``
    the worker's /metrics is then read that many times (``workerproc.scrape_costs``, under "scrapes").
    """
    app_id = f"{tag}-w{uuid.uuid4().hex[:6]}"
    fleet = workerproc.fleet_topic(tag, app_id)
    dataset.create_topics(bootstrap, [fleet], partitions=1)
    progress = SummaryProgress()
    watcher = TopicWatcher(bootstrap, fleet, progress.handle)
    watcher.start()
    launched = time.time()
    worker = workerproc.launch(bootstrap, workdir / app_id, app_id, topic, tag, extra_env)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        capped = False
        while progress.records() < records and time.monotonic() < deadline and not capped:
            if worker.process is not None and worker.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            time.sleep(0.2)
            capped = max_s is not None and progress.span_s() >= max_s
        # Records covered now, before the counter is read: a summary is sent after its calls are counted, so
        # the counter read next covers them all (counted after it, summaries of a worker still running could
        # make a capped run look complete with a counter read earlier).
        done = min(progress.records(), records)
        processed = workerproc.processed(worker) or 0.0
        scraped = workerproc.scrape_costs(worker, scrapes)
    finally:
        worker.stop()
        watcher.stop()
    timed = list(progress.runs)
    expected = calls if done == records else 1.0  # capped: record sizes vary, the count can only be checked > 0
    if (done < records and not capped) or processed < expected:
        raise RuntimeError(f"worker processed {processed:.0f} of {calls} calls:\n{worker.log_tail()}")
    covered = min(sum(count for _, count in timed), records)
    counted, last = calls * covered / records, max(stamp for stamp, _ in timed) / 1000.0
    return {"eps": summarized_rate(timed, calls / records), "startup_s": min(timed)[0] / 1000.0 - launched,
            "wall_eps": counted / (last - launched), "processed": processed, "records_timed": covered,
            "scrapes": scraped}


_FAUST_NOOP_APP = textwrap.dedent(
    '''
    """A faust agent that only counts: per-record framework overhead, nothing else."""
    import json
    import os
    import time

    import faust

    app = faust.App(os.environ["NOOP_APP_ID"], broker="kafka://" + os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                    web_enabled=False, store="memory://", topic_replication_factor=1, topic_partitions=3,
                    consumer_auto_offset_reset="earliest")
    source = app.topic(os.environ["NOOP_SOURCE"], key_serializer="raw", value_serializer="raw")
    TARGET = int(os.environ["NOOP_TARGET"])
    state = {"count": 0, "first": 0.0}


    @app.agent(source)
    async def noop(stream):
        async for _value in stream:
            state["count"] += 1
            if state["count"] == 1:
                state["first"] = time.perf_counter()
            elif state["count"] == TARGET:
                elapsed = time.perf_counter() - state["first"]
                with open(os.environ["NOOP_RESULT"], "w") as out:
                    out.write(json.dumps({"eps": (TARGET - 1) / elapsed}))


    if __name__ == "__main__":
        app.main()
    '''
)


def faust_noop_run(bootstrap: str, topic: str, records: int, workdir: Path) -> float:
    """Records (= calls) per second of a no-op faust agent, first record to last, as a subprocess.

    The app writes its figure to a file: faust routes a worker's stdout into its logger.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    script, figure = workdir / "noop_app.py", workdir / f"noop-{uuid.uuid4().hex[:6]}.json"
    script.write_text(_FAUST_NOOP_APP)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "NOOP_SOURCE": topic, "NOOP_TARGET": str(records),
           "NOOP_APP_ID": f"{topic}-noop-{uuid.uuid4().hex[:6]}", "NOOP_RESULT": str(figure)}
    cmd = [sys.executable, str(script), "worker", "--without-web", "--loglevel", "warn"]
    log = (workdir / "noop.log").open("ab")
    process = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if figure.exists() and figure.stat().st_size:
                return float(json.loads(figure.read_text())["eps"])
            time.sleep(0.2)
        raise RuntimeError(f"faust no-op app reported nothing; log in {workdir / 'noop.log'}")
    finally:
        _terminate(process)
        log.close()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def run(scale: Scale, bootstrap: str, tag: str) -> GroupResult:
    result = GroupResult()
    rows = dataset.realistic_rows(scale.calls)
    records = dataset.batch_records(rows)
    calls_topic, single_topic = f"{tag}-calls", f"{tag}-single"
    dataset.preload(bootstrap, calls_topic, records)
    dataset.preload(bootstrap, single_topic, dataset.single_records(rows[: scale.faust_records]))
    total = sum(calls for _, _, calls in records)
    worker_extra: list[dict[str, float]] = []

    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        workdir = Path(tmp)

        def worker() -> float:
            worker_extra.append(worker_run(bootstrap, calls_topic, len(records), total, tag, workdir))
            return worker_extra[-1]["eps"]

        variants: dict[str, Callable[[], float]] = {
            "raw": lambda: consume_rate(bootstrap, calls_topic, len(records), total, decode=False),
            "decode": lambda: consume_rate(bootstrap, calls_topic, len(records), total, decode=True),
            "worker": worker,
            "faust_noop": lambda: faust_noop_run(bootstrap, single_topic, scale.faust_records, workdir / "noop"),
        }
        samples = alternating(variants, scale.rounds)
    mid = medians(samples)

    def runs(name: str) -> str:
        return describe({name: samples[name]})

    result.put("raw_consume_eps", mid["raw"],
               f"{total:,} calls in {len(records)} records of <=500, consume(num_messages=500); " + runs("raw"))
    result.put("decode_eps", mid["decode"], "raw loop + CallDecoder.decode per record (validation on); "
               + runs("decode"))
    result.put("worker_eps", mid["worker"],
               "llmpulse worker subprocess; first to last record processed, timed by its fleet summaries' "
               "send stamps (polling /metrics fast would slow it: each scrape refreshes every gauge); "
               "llmpulse_events_processed_total checked at the end; " + runs("worker"))
    result.put("faust_noop_eps", mid["faust_noop"],
               f"no-op faust agent subprocess, {scale.faust_records:,} one-call records; " + runs("faust_noop"))
    startup = sorted(run["startup_s"] for run in worker_extra)
    result.put("worker_startup_s", startup[len(startup) // 2], "launch to first processed call (median)")
    wall = sorted(run["wall_eps"] for run in worker_extra)
    result.put("worker_wall_eps", wall[len(wall) // 2], "calls / (launch to last call), start-up included")
    result.put("worker_vs_raw", ratio(mid["worker"], mid["raw"]))
    result.put("worker_vs_decode", ratio(mid["worker"], mid["decode"]))
    result.put("worker_vs_faust_noop", ratio(mid["worker"], mid["faust_noop"]))
    return result
