"""How long an incident takes to become an alert on the alerts topic, at half and at 80% of the worker's top rate.

The top rate is the worker's *live* maximum: what it drains while ``LiveTraffic`` offers more than it can take,
on the same machine (``live_max_rate``). The rate measured earlier on a pre-loaded topic is higher wherever the
load generator shares the cores with the worker (on 2 cores, producing ~100k calls/s from Python takes most of
one), and 80% of it would be more than the worker can drain at all: the latency would be the backlog's.
A worker runs on fresh topics while ``LiveTraffic`` offers a share (``LOADS``: 50%, then 80%) of that maximum.
Twenty incidents are injected, each a record of slow calls (6 s) for a service never seen before, so each one
opens a new alert; latency runs from just before that record is produced to the arrival of its
first alert on the alerts topic (one process, one clock). The baseline is a raw confluent-kafka
consume -> produce passthrough on the same broker, timed the same way.
"""

from __future__ import annotations

import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import Consumer, Producer

from bench import dataset, workerproc
from bench.common import ROUNDS, GroupResult, percentile
from bench.traffic import LiveTraffic, TopicWatcher
from llmpulse.producers.batching import BatchEncoder, new_event_id
from llmpulse.schemas.alerts_topic import AlertsTopicCodec

INCIDENTS = 20
INCIDENT_CALLS = 40  # above the latency rules' min_samples (20)
INCIDENT_LATENCY_MS = 6_000.0
WARMUP_S = 3.0
GAP_S = 0.5
SETTLE_S = 15.0
PASSTHROUGH_MESSAGES = 400
PASSTHROUGH_RATE = 100.0
LOADS = {"": 0.5, "_80pct": 0.8}  # key suffix -> share of the max worker rate offered as background traffic
SATURATE = 1.25  # the live maximum is measured under this multiple of the pre-loaded rate
MEASURE_S = 8.0


class Probe(NamedTuple):
    latencies: list[float]  # seconds from each incident's production to its first alert
    incidents: int  # incidents sent
    late_ticks: int  # traffic producer ticks that ran late
    offered_eps: float  # calls/s the traffic producer actually sent


def incident_rows(service: str, template: dict[str, Any]) -> list[dict[str, Any]]:
    stamp = int(time.time() * 1000)
    return [{**template, "service": service, "latency_ms": INCIDENT_LATENCY_MS, "timestamp_ms": stamp,
             "event_id": new_event_id(), "status": "ok", "prompt_text": None, "response_text": None}
            for _ in range(INCIDENT_CALLS)]


def alert_latencies(bootstrap: str, rate: float, tag: str) -> Probe:
    """Incidents injected into a worker under ``rate`` calls/s of background traffic, and when their alerts came."""
    codec = AlertsTopicCodec()
    produced: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def on_alert(message: Any, when: float) -> None:
        kind, record = codec.decode(message.value())
        if kind != "alert":
            return  # incidents follow their first member alert; the latency is the member's
        service = record.get("service") or ""
        if service in produced and service not in arrived:
            arrived[service] = when

    app_id = f"{tag}-alerts-{uuid.uuid4().hex[:6]}"
    calls_topic, alerts_topic = f"{tag}-{app_id}-calls", f"{tag}-{app_id}-alerts"
    dataset.create_topics(bootstrap, [calls_topic, alerts_topic])
    pool = dataset.realistic_rows(20_000, seed=11)
    template = {k: v for k, v in pool[0].items() if k not in ("labels",)}
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        worker = workerproc.launch(bootstrap, Path(tmp), app_id, calls_topic, tag,
                                   {"LLMPULSE_TOPIC_ALERTS": alerts_topic})
        watcher = traffic = None
        offered = 0.0
        try:
            workerproc.wait_ready(worker)
            watcher = TopicWatcher(bootstrap, alerts_topic, on_alert)
            watcher.start()
            traffic = LiveTraffic(bootstrap, calls_topic, rate, pool)
            traffic.start()
            offering = time.monotonic()
            time.sleep(WARMUP_S)
            encoder = BatchEncoder(producer_id="bench-incidents")
            for k in range(INCIDENTS):
                service = f"incident-{k:02d}-{uuid.uuid4().hex[:4]}"
                payload = encoder.encode_batch(incident_rows(service, template))
                produced[service] = time.time()
                traffic.produce(service, payload)
                traffic.producer.poll(0)
                time.sleep(GAP_S)
            deadline = time.monotonic() + SETTLE_S
            while len(arrived) < len(produced) and time.monotonic() < deadline:
                time.sleep(0.1)
            offered = traffic.sent_calls / (time.monotonic() - offering)
        finally:
            if traffic is not None:
                traffic.stop()
            if watcher is not None:
                watcher.stop()
            worker.stop()
    latencies = [arrived[s] - produced[s] for s in produced if s in arrived]
    return Probe(latencies, len(produced), traffic.late_ticks if traffic is not None else 0, offered)


def p99_or_reason(probe: Probe) -> tuple[float | None, str]:
    """The p99 latency counting an incident without an alert as slower than all; None (and why) when the p99
    falls on such an incident."""
    missed = probe.incidents - len(probe.latencies)
    rank = int(0.99 * (probe.incidents - 1))  # percentile()'s order statistic
    if not probe.latencies or rank >= len(probe.latencies):
        return None, (f"not measured: {missed} of {probe.incidents} incidents raised no alert within {SETTLE_S:.0f} s, "
                      f"so the p99 is above {SETTLE_S:.0f} s")
    p99 = percentile(probe.latencies + [float("inf")] * missed, 0.99)
    return p99, (f"{len(probe.latencies)} of {probe.incidents} incidents alerted (one without an alert counts as the "
                 "slowest); p99 is the largest but one at most")


def passthrough_latencies(bootstrap: str, tag: str) -> list[float]:
    """Seconds from produce to arrival through a plain consume -> produce loop (the broker's floor)."""
    source, sink = f"{tag}-pt-src", f"{tag}-pt-sink"
    dataset.create_topics(bootstrap, [source, sink])
    latencies: list[float] = []
    stop = threading.Event()

    def forward() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{tag}-pt", "auto.offset.reset": "earliest"})
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        consumer.subscribe([source])
        while not stop.is_set():
            for message in consumer.consume(num_messages=100, timeout=0.05):
                if message.error() is None:
                    producer.produce(sink, message.value(), key=message.key())
            producer.poll(0)
        producer.flush(10)
        consumer.close()

    forwarder = threading.Thread(target=forward, daemon=True)
    forwarder.start()
    def on_arrival(message: Any, when: float) -> None:
        latencies.append(when - struct.unpack("<d", message.value())[0])

    watcher = TopicWatcher(bootstrap, sink, on_arrival)
    watcher.start()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    time.sleep(3.0)  # let the forwarder join its group: its first fetch is start-up, not latency
    for _ in range(PASSTHROUGH_MESSAGES):
        producer.produce(source, struct.pack("<d", time.time()))
        producer.poll(0)
        time.sleep(1.0 / PASSTHROUGH_RATE)
    producer.flush(10)
    deadline = time.monotonic() + 10
    while len(latencies) < PASSTHROUGH_MESSAGES and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    forwarder.join(15)
    watcher.stop()
    return latencies


class LiveMax(NamedTuple):
    drained_eps: float  # calls/s the worker processed while over-offered
    offered_eps: float  # calls/s the traffic producer actually sent meanwhile
    backlog: float  # calls produced but not processed at the end (grows: the worker was the limit)


def live_max_rate(bootstrap: str, tag: str, offered: float) -> LiveMax:
    """Calls/s a worker drains while ``LiveTraffic`` offers ``offered`` calls/s on the same machine, counted by
    its processed-calls counter over MEASURE_S after a warm-up (two scrapes of /metrics)."""
    app_id = f"{tag}-livemax-{uuid.uuid4().hex[:6]}"
    calls_topic = f"{tag}-{app_id}-calls"
    dataset.create_topics(bootstrap, [calls_topic])
    pool = dataset.realistic_rows(20_000, seed=11)
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        worker = workerproc.launch(bootstrap, Path(tmp), app_id, calls_topic, tag)
        traffic = None
        try:
            workerproc.wait_ready(worker)
            traffic = LiveTraffic(bootstrap, calls_topic, offered, pool)
            traffic.start()
            time.sleep(WARMUP_S)
            began, processed, sent = time.monotonic(), workerproc.processed(worker) or 0.0, traffic.sent_calls
            time.sleep(MEASURE_S)
            elapsed = time.monotonic() - began
            done = (workerproc.processed(worker) or 0.0) - processed
            produced = traffic.sent_calls - sent
            backlog = traffic.sent_calls - (workerproc.processed(worker) or 0.0)
        finally:
            if traffic is not None:
                traffic.stop()
            worker.stop()
    return LiveMax(done / elapsed, produced / elapsed, backlog)


def run(bootstrap: str, tag: str, max_worker_eps: float, rounds: int = ROUNDS) -> GroupResult:
    """The 50% figure from one probe under the first live maximum; the 80% figure the median of ``rounds``
    probes, each under 80% of a live maximum measured just before it (the machine's pace drifts between
    minutes by more than the 20% margin 80% leaves, so one pair decides little)."""
    result = GroupResult()
    lives = [live_max_rate(bootstrap, tag, SATURATE * max_worker_eps)]
    live = lives[0]
    result.put("alert_latency_live_max_eps", live.drained_eps,
               f"calls/s the worker drained while {live.offered_eps:,.0f} calls/s were produced beside it "
               f"({SATURATE:g}x the pre-loaded rate offered; {live.backlog:,.0f} calls behind at the end), "
               f"over {MEASURE_S:g} s after a {WARMUP_S:g} s warm-up; the first of {rounds} measurements (the "
               "others each precede an 80% probe)")
    half = alert_latencies(bootstrap, LOADS[""] * live.drained_eps, tag)
    _put_probe(result, "", half, f"{LOADS[''] * live.drained_eps:,.0f} calls/s offered (50% of the live max worker "
                                 f"rate, {live.drained_eps:,.0f} calls/s, alert_latency_live_max_eps")
    probes = [alert_latencies(bootstrap, LOADS["_80pct"] * live.drained_eps, tag)]
    for _ in range(rounds - 1):
        lives.append(live_max_rate(bootstrap, tag, SATURATE * max_worker_eps))
        probes.append(alert_latencies(bootstrap, LOADS["_80pct"] * lives[-1].drained_eps, tag))
    _put_rounds(result, "_80pct", lives, probes)
    # The reading this replaces, kept beside it: 80% of the rate drained from a pre-loaded topic.
    preloaded = alert_latencies(bootstrap, 0.8 * max_worker_eps, tag)
    _put_probe(result, "_80pct_preloaded", preloaded,
               f"{0.8 * max_worker_eps:,.0f} calls/s offered (80% of the pre-loaded max worker rate, "
               f"{max_worker_eps:,.0f} calls/s, more than the worker drains while the load is produced beside it")
    passthrough = passthrough_latencies(bootstrap, tag)
    result.put("passthrough_p99_s", percentile(passthrough, 0.99) if passthrough else None,
               f"confluent consume->produce loop, {len(passthrough)} messages at {PASSTHROUGH_RATE:.0f}/s")
    return result


def _describe_probe(probe: Probe, offered: str) -> str:
    return (f"{INCIDENTS} incidents ({INCIDENT_CALLS} calls at 6 s, new service each) under {offered}; "
            f"{probe.offered_eps:,.0f} calls/s sent, producer late on {probe.late_ticks} ticks); produce -> first "
            "alert on the alerts topic")


def _put_probe(result: GroupResult, suffix: str, probe: Probe, offered: str) -> None:
    result.put(f"alert_latency_p50_s{suffix}", percentile(probe.latencies, 0.5) if probe.latencies else None,
               _describe_probe(probe, offered))
    result.put(f"alert_latency_p99_s{suffix}", *p99_or_reason(probe))
    result.put(f"alert_incidents_missed{suffix}", probe.incidents - len(probe.latencies),
               f"no alert within {SETTLE_S:.0f} s")


def _put_rounds(result: GroupResult, suffix: str, lives: list[LiveMax], probes: list[Probe]) -> None:
    """Median p50 and p99 over rounds (a p99 that could not be measured counts as the slowest), with each
    round's live maximum and figures in the notes."""
    share = LOADS[suffix]
    p99s = [p99_or_reason(probe)[0] for probe in probes]
    p50s = [percentile(probe.latencies, 0.5) if probe.latencies else None for probe in probes]
    rounds = "; ".join(
        f"round {k + 1}: live max {live.drained_eps:,.0f} calls/s, {probe.offered_eps:,.0f} sent, p50 "
        f"{_seconds(p50)}, p99 {_seconds(p99)}, {probe.incidents - len(probe.latencies)} missed"
        for k, (live, probe, p50, p99) in enumerate(zip(lives, probes, p50s, p99s, strict=True)))
    method = (f"median of {len(probes)} rounds, each a live maximum measured as alert_latency_live_max_eps and then "
              f"{INCIDENTS} incidents ({INCIDENT_CALLS} calls at 6 s, new service each) under {share:.0%} of it; "
              f"produce -> first alert on the alerts topic; {rounds}")
    p99 = _median_or_none(p99s)
    result.put(f"alert_latency_p50_s{suffix}", _median_or_none(p50s), method)
    result.put(f"alert_latency_p99_s{suffix}", p99, method if p99 is not None else
               f"not measured: the median round raised no alert within {SETTLE_S:.0f} s for its slowest incident; "
               + method)
    result.put(f"alert_incidents_missed{suffix}", sum(probe.incidents - len(probe.latencies) for probe in probes),
               f"no alert within {SETTLE_S:.0f} s, over the {len(probes)} rounds")


def _median_or_none(values: list[float | None]) -> float | None:
    """The median, None (unmeasured, slower than any) sorting last; None when the median is."""
    ordered = sorted(values, key=lambda v: (v is None, v or 0.0))
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
