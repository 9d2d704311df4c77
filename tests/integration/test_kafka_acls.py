"""Least-privilege ACLs on the secured local broker (StandardAuthorizer, deny when no ACL; llmpulse/broker_acls.py).

A broker of its own (``acls=True``), so the other secured tests keep a broker without an authorizer. Shows
that only the worker may write ``llm-alert-commands``: an on-call tool or the SDK producing an acknowledgement
there is refused by the broker with TOPIC_AUTHORIZATION_FAILED, and the record is not on the topic; and that the
grants are enough for the whole path, each part as its own principal: a worker (creating its topics, faust's
changelogs and group), the SDK (calls, its admission gate following budget state), ``alerts tail`` and an
acknowledgement through the worker's API.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse import schemas
from llmpulse.connection import client_config
from llmpulse.producers import AdmissionSettings, Pulse
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.cli import run_cli
from tests.support.secure_kafka import SecuredKafka, first_alert, secured_broker, send_slow_calls
from tests.support.waiting import wait_until
from tests.support.worker import API_TOKEN, WorkerProcess

pytestmark = pytest.mark.timeout(240)

COMMANDS, CALLS, ALERTS = "llm-alert-commands", "llm-calls", "llm-alerts"


@pytest.fixture(scope="module")
def acl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    with secured_broker(tmp_path_factory.mktemp("acl-kafka"), acls=True) as kafka:
        admin = AdminClient(client_config(kafka.bootstrap, kafka.files.security(), "test.admin"))
        for future in admin.create_topics([NewTopic(t, 1, 1) for t in (COMMANDS, CALLS, ALERTS)]).values():
            future.result(30)
        yield kafka


def _produce(kafka: SecuredKafka, user: str, topic: str, value: bytes) -> KafkaError | None:
    """Produce one record as ``user``; the delivery error, or None once the broker has it."""
    producer = Producer({**client_config(kafka.bootstrap, kafka.files.security(user), f"test.{user}"),
                         "message.timeout.ms": 10_000})
    outcome: list[KafkaError | None] = []
    producer.produce(topic, value, on_delivery=lambda err, _msg: outcome.append(err))
    deadline = time.monotonic() + 15
    while not outcome and time.monotonic() < deadline:
        producer.poll(0.2)
    assert outcome, f"no delivery report for {user} -> {topic}"
    return outcome[0]


def _ack(alert_id: str, actor: str) -> bytes:
    return SchemaCodec(schemas.ALERT_COMMAND).encode({"command_id": uuid.uuid4().hex, "alert_id": alert_id,
                                                      "action": "acknowledge", "actor": actor,
                                                      "issued_at_ms": int(time.time() * 1000)})


@pytest.mark.parametrize("user", ["oncall", "sdk"])
def test_only_the_worker_may_acknowledge_alerts_through_kafka(acl_kafka: SecuredKafka, user: str) -> None:
    refused = _produce(acl_kafka, user, COMMANDS, _ack(f"a-{user}", user))
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    assert "authorization failed" in refused.str().lower()
    assert _produce(acl_kafka, "worker", COMMANDS, _ack("a-worker", "worker")) is None
    seen = _acknowledged(acl_kafka)
    assert "a-worker" in seen and f"a-{user}" not in seen


def test_each_principal_has_what_it_uses(acl_kafka: SecuredKafka) -> None:
    assert _produce(acl_kafka, "sdk", CALLS, b"x") is None
    assert _produce(acl_kafka, "worker", ALERTS, b"alert") is None
    denied = _produce(acl_kafka, "oncall", ALERTS, b"forged")  # on-call reads alerts, never writes them
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_each_part_runs_as_its_own_least_privileged_principal(acl_kafka: SecuredKafka, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmpulse")  # the SDK's producer and followers, librdkafka's lines
    worker = WorkerProcess(acl_kafka.bootstrap, tmp_path / "worker", extra_env=acl_kafka.env("worker"))
    granted = run_cli("acls", "--apply", env={**worker.env, **acl_kafka.env()})  # as admin, for this worker's names
    assert granted.returncode == 0, granted.stderr
    assert f"ACLs in place on {acl_kafka.bootstrap}" in granted.stdout
    worker.start(timeout=90)  # creates its topics, joins its group, restores its changelogs: all as "worker"
    try:
        sdk = acl_kafka.files.security("sdk")
        with Pulse(service="checkout", bootstrap_servers=acl_kafka.bootstrap, kafka=sdk, topic=worker.topic("calls"),
                   budget_state_topic=worker.topic("budget_state"), schemas_topic=worker.topic("schemas"),
                   linger_ms=20,
                   admission=AdmissionSettings(mode="observe")) as pulse:
            assert pulse.gate.budgets is not None and pulse.gate.budgets.wait_ready(30)
            send_slow_calls(pulse)
        alert = first_alert(acl_kafka, worker)
        assert (alert["kind"], alert["rule"], alert["service"]) == ("alert", "latency_p95", "checkout")
        ack = run_cli("alerts", "ack", alert["alert_id"], "--url", worker.url, "--actor", "oncall-test",
                      env={**worker.env, **acl_kafka.env("oncall"), "LLMPULSE_API_TOKEN": API_TOKEN})
        assert ack.returncode == 0, ack.stderr
        acknowledged = wait_until(lambda: worker.get("/api/alerts?status=acknowledged")[1]["alerts"], 30)
        assert [(found["alert_id"], found["acknowledged_by"]) for found in acknowledged] == [
            (alert["alert_id"], "oncall-test")]
    finally:
        worker.stop()
    for part, log in (("worker", worker.log_tail(5000)), ("sdk", caplog.text)):
        assert "authorization" not in log.lower(), f"{part}: {log[-4000:]}"


def _acknowledged(kafka: SecuredKafka) -> list[str]:
    """alert_id of every command on the commands topic, read as the admin user."""
    codec = SchemaCodec(schemas.ALERT_COMMAND)
    consumer = Consumer({**client_config(kafka.bootstrap, kafka.files.security(), "test.admin"),
                         "group.id": f"test-{uuid.uuid4().hex[:8]}", "enable.partition.eof": True})
    consumer.assign([TopicPartition(COMMANDS, 0, OFFSET_BEGINNING)])
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise AssertionError(message.error())
            seen.append(codec.decode(message.value())["alert_id"])
    finally:
        consumer.close()
    return seen
