"""SDK -> real Kafka -> real worker process -> alerts, dead letters, metrics and the HTTP API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse import schemas
from llmpulse.processors.topics import changelog_topics
from llmpulse.producers import Pulse
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.cli import run_cli
from tests.support.kafka import read_alert_records, read_topic
from tests.support.waiting import wait_until
from tests.support.worker import API_TOKEN, WorkerProcess

pytestmark = pytest.mark.timeout(180)
DEAD = SchemaCodec(schemas.DEAD_LETTER)


def _pulse(worker: WorkerProcess, service: str) -> Pulse:
    return Pulse(service=service, bootstrap_servers=worker.bootstrap, topic=worker.topic("calls"), linger_ms=20)


def _send_slow_calls(worker: WorkerProcess, service: str, n: int, latency_ms: float, batches: int = 1) -> None:
    with _pulse(worker, service) as pulse:
        for _ in range(batches):
            for i in range(n):
                pulse.record(provider="openai", request_model="gpt-4o", latency_ms=latency_ms + i,
                             input_tokens=120, output_tokens=40)
            assert pulse.flush(15) == 0
            time.sleep(0.3)


def test_slow_calls_fire_one_p95_alert_however_many_batches_cross(worker: WorkerProcess) -> None:
    _send_slow_calls(worker, "checkout", n=60, latency_ms=3000.0, batches=4)

    alerts = read_alert_records(worker.bootstrap, worker.topic("alerts"), until=lambda v: len(v) >= 1,
                                timeout=30)
    time.sleep(2)  # later batches had every chance to fire again
    alerts = read_alert_records(worker.bootstrap, worker.topic("alerts"), timeout=3)

    p95 = [a for a in alerts if a["rule"] == "latency_p95" and a["status"] == "firing"]
    assert len(p95) == 1, alerts
    alert = p95[0]
    assert (alert["service"], alert["model"], alert["provider"]) == ("checkout", "gpt-4o", "openai")
    assert alert["severity"] == "WARNING" and alert["priority"] == "P2"
    assert 3.0 <= alert["observed"] <= 3.1 and alert["threshold"] == 2.0
    assert alert["mitigation"]
    assert worker.metric("llmpulse_llm_requests_total", service="checkout", status="ok") == 240
    assert worker.metric("llmpulse_alerts_emitted_total", rule="latency_p95", status="firing") == 1


def test_fast_calls_raise_no_alert(worker: WorkerProcess) -> None:
    _send_slow_calls(worker, "search", n=100, latency_ms=300.0)
    assert wait_until(lambda: worker.metric("llmpulse_events_processed_total") >= 100, 30, step=0.3)
    alerts = read_topic(worker.bootstrap, worker.topic("alerts"), until=lambda v: False, timeout=3)
    assert alerts == []


def test_the_state_it_writes_and_the_broker_acknowledged_show_on_metrics(worker: WorkerProcess) -> None:
    """On-call sees the state writer move and catch up (a pending count that only grows: the broker is slow)."""
    _send_slow_calls(worker, "search", n=50, latency_ms=300.0)
    assert wait_until(lambda: worker.metric("llmpulse_events_processed_total") >= 50, 30, step=0.3)
    # the timer reports them (every 5 s): the calls' series, slots, usage, budgets and the cursor at least
    assert wait_until(lambda: worker.metric("llmpulse_state_records_written_total") >= 5, 15, step=0.5)
    assert wait_until(lambda: worker.metric("llmpulse_state_records_pending") == 0, 15, step=0.5)


def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_still_count(worker: WorkerProcess) -> None:
    producer = Producer({"bootstrap.servers": worker.bootstrap})
    topic = worker.topic("calls")
    producer.produce(topic, b"not avro at all")
    producer.produce(topic, b"\xc3\x01" + b"\x00" * 8 + b"\x02")  # unknown fingerprint
    producer.produce(topic, b"")
    producer.flush(10)
    with _pulse(worker, "billing") as pulse:
        pulse.record(provider="openai", request_model="gpt-4o", latency_ms=120.0)
        pulse.record(provider="openai", request_model="gpt-4o", latency_ms=float("nan"))
        pulse.record(provider="openai", request_model="gpt-4o", latency_ms=80.0, input_tokens=-3)
        pulse.record(provider="openai", request_model="gpt-4o", latency_ms=90.0)
        assert pulse.flush(10) == 0

    dead = read_topic(worker.bootstrap, worker.topic("dead_letter"), until=lambda v: len(v) >= 5,
                      decode=DEAD.decode)

    reasons = sorted(d["reason_code"] for d in dead)
    assert reasons == ["bad_magic", "empty", "invalid_field", "invalid_field", "unknown_schema"]
    by_reason = {d["reason"] for d in dead}
    assert "latency_ms must be a finite number >= 0" in by_reason
    assert any("input_tokens" in r for r in by_reason)
    single = [d for d in dead if d["batch_index"] is not None]
    assert all(SchemaCodec(schemas.LLM_CALL).decode(d["payload"])["service"] == "billing" for d in single)
    assert wait_until(lambda: worker.metric("llmpulse_llm_requests_total", service="billing") == 2, 30, step=0.3)
    assert worker.metric("llmpulse_dead_letter_total") == 5
    assert worker.process is not None and worker.process.poll() is None


def test_acknowledge_needs_the_token_and_reaches_every_view(worker: WorkerProcess) -> None:
    _send_slow_calls(worker, "support", n=50, latency_ms=2600.0)
    listed = wait_until(lambda: worker.get("/api/alerts?status=firing")[1]["alerts"], 30, step=0.3)
    alert_id = listed[0]["alert_id"]
    path = f"/api/alerts/{alert_id}/acknowledge"

    assert worker.request("POST", path)[0] == 401
    assert worker.request("POST", path, headers={"Authorization": "Bearer nope"})[0] == 403
    too_big = json.dumps({"actor": "x" * 20000}).encode()
    assert worker.request("POST", path, too_big, {"Authorization": f"Bearer {API_TOKEN}"})[0] == 413
    status, body = worker.request("POST", path, json.dumps({"actor": "oncall"}).encode(),
                                  {"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 202, body

    acked = wait_until(lambda: worker.get("/api/alerts?status=acknowledged")[1]["alerts"], 30, step=0.3)
    assert acked[0]["alert_id"] == alert_id and acked[0]["acknowledged_by"] == "oncall"
    assert worker.get("/api/alerts?severity=bogus")[0] == 400
    assert worker.get("/health/live")[0] == 200
    _, summary = worker.get("/api/metrics")
    row = next(r for r in summary["series"] if r["service"] == "support")
    assert row["1m"]["count"] == 50 and 2.6 <= row["1m"]["p95"] <= 2.7


def test_a_calls_topic_the_worker_cannot_serve_stops_it_in_one_line(
        worker_factory: Callable[..., WorkerProcess]) -> None:
    """More calls partitions than LLMPULSE_TOPIC_PARTITIONS: partitions past it would have no state and nowhere
    to send alerts, so the worker says so and exits before starting instead of crashing on their first record."""
    worker = worker_factory(start=False, LLMPULSE_TOPIC_PARTITIONS="3")
    admin = AdminClient({"bootstrap.servers": worker.bootstrap})
    admin.create_topics([NewTopic(worker.topic("calls"), 6, 1)])[worker.topic("calls")].result(30)
    started = run_cli("worker", env=worker.env, timeout=90)
    assert started.returncode == 2
    problem = [line for line in started.stderr.splitlines() if line.startswith("llmpulse worker:")]
    assert len(problem) == 1 and "Traceback" not in started.stderr, started.stderr
    assert f"{worker.topic('calls')} has 6 partitions, not 3" in problem[0]
    assert "LLMPULSE_TOPIC_PARTITIONS" in problem[0]


def test_a_recovering_worker_says_how_much_changelog_it_has_left_to_read(
        worker_factory: Callable[..., WorkerProcess]) -> None:
    """A restarted worker reads its partitions' changelogs before any call (docs/operations.md, "What a start
    reads"); meanwhile /health/ready answers 503 with the changelog offsets it still has to read, falling to the
    200 it answers once ready."""
    worker = worker_factory(start=False)
    changelog = changelog_topics(worker.app_id)[0]
    admin = AdminClient({"bootstrap.servers": worker.bootstrap})
    admin.create_topics([NewTopic(changelog, 3, 1, config={"cleanup.policy": "compact"})])[changelog].result(30)
    written = 600_000  # tombstones of slots long gone: read like any state record, nothing to restore
    producer = Producer({"bootstrap.servers": worker.bootstrap, "linger.ms": 50,
                         "queue.buffering.max.messages": written})
    for n in range(written):
        producer.produce(changelog, key=f"0|latency/gone@{n}".encode(), value=None, partition=0)
    assert producer.flush(60) == 0

    answers: list[tuple[int, Any]] = []
    worker.start(timeout=180, answers=answers)
    left = [body["recovery_offsets_left"] for status, body in answers if status == 503]
    reading = [n for n in left if n > 0]
    assert reading, answers  # seen while it read
    assert max(reading) <= written and reading[-1] < reading[0], reading  # and falling
    assert answers[-1] == (200, {"ready": True})
