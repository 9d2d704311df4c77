"""``llmpulse simulate --fast`` against a real broker: every delivered call is on the topic and decodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError

from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from tests.support.kafka import read_alert_records


def _run_simulate(bootstrap: str, topic: str, *args: str) -> dict:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LLMPULSE_TOPIC_CALLS": topic}
    done = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli", "simulate", "--fast", "--json", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _consume_all(bootstrap: str, topic: str, expected_calls: int, timeout_s: float = 60.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sim-test-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    payloads: list[bytes] = []
    decoder = _decoder()
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected_calls and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1.0):
                if message.error():
                    assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                    continue
                payloads.append(message.value())
                calls, _ = decoder.decode(message.value(), now_ms=int(time.time() * 1000))
                seen += len(calls) if calls is not None else 0
        # Nothing beyond what the SDK reported delivered may show up.
        payloads += [m.value() for m in consumer.consume(num_messages=500, timeout=2.0) if not m.error()]
    finally:
        consumer.close()
    return payloads


def _decoder() -> CallDecoder:
    return CallDecoder(Limits(), max_record_bytes=8 << 20, max_calls_per_batch=10_000)


def test_fast_simulation_lands_every_delivered_call(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("sim-calls", 3)
    summary = _run_simulate(kafka_bootstrap, topic, "--duration", "10", "--rate", "200", "--seed", "3",
                            "--scenario", "pii-leak,error-burst", "--scenario-start", "2", "--scenario-duration", "5")
    sdk = summary["sdk"]
    assert sdk["recorded"] == summary["recorded"] == summary["generated"] > 1_500  # ~200/s for 10 s
    assert sdk["delivered"] == sdk["recorded"] and sdk["pending"] == 0
    assert sdk["dropped_buffer_full"] == sdk["dropped_delivery_failed"] == sdk["dropped_encoding"] == 0

    decoder, now_ms = _decoder(), int(time.time() * 1000)
    statuses: Counter[str] = Counter()
    total, pii_markers = 0, 0
    for payload in _consume_all(kafka_bootstrap, topic, sdk["delivered"]):
        calls, refused = decoder.decode(payload, now_ms)
        assert refused == []
        assert calls is not None
        total += len(calls)
        statuses.update(calls.status.tolist())
        pii_markers += sum(1 for text in calls.response_text if text and "[REDACTED_CREDIT_CARD]" in text)
        # Simulated time spans the 10 s that ended when the run started sending.
        assert calls.timestamp_ms.min() >= summary["start_ms"] and calls.timestamp_ms.max() <= summary["end_ms"]
    assert total == sdk["delivered"]
    sent = Counter()
    for row in summary["by_service_status"]:
        sent[row["status"]] += row["calls"]
    assert sum(sent.values()) == total
    assert statuses[0] == sent["ok"]  # status code 0 is "ok"
    assert pii_markers == summary["scenarios"][0]["calls"] > 0  # every leak arrived, redacted by the SDK


def test_list_scenarios_names_every_scenario() -> None:
    from llmpulse.producers.simulation.scenarios import SCENARIOS

    done = subprocess.run([sys.executable, "-m", "llmpulse.cli", "simulate", "--list-scenarios"],
                          capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "COLUMNS": "200"})
    for name, scenario in SCENARIOS.items():
        assert name in done.stdout
        assert scenario.description[:30] in done.stdout


def test_latency_spike_fires_the_p95_alert_inside_its_window(worker_factory: Callable[..., Any]) -> None:
    """The scenario's promise end to end: a quiet baseline, then the worker's p95 alert within 60 s."""

    worker = worker_factory()
    env = {**worker.env}
    done = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli", "simulate", "--fast", "--json", "--duration", "100", "--seed", "2",
         "--scenario", "latency-spike"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    (window,) = summary["scenarios"]
    alerts = read_alert_records(worker.bootstrap, worker.topic("alerts"), timeout=60,
                                until=lambda v: any(a["rule"] == "latency_p95" for a in v))
    firing = [a for a in alerts if a["rule"].startswith("latency") and a["status"] == "firing"]
    assert firing, worker.log_tail()
    assert min(a["started_at_ms"] for a in firing) >= window["start_ms"]  # the baseline raised nothing
    assert min(a["started_at_ms"] for a in firing) <= window["start_ms"] + 60_000
