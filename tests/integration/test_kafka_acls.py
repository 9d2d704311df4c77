"""Least-privilege ACLs on the secured local broker (StandardAuthorizer, deny when no ACL; llmpulse/broker_acls.py).

A broker of its own (``acls=True``), so the other secured tests keep a broker without an authorizer. Shows
that only the worker may write ``llm-alert-commands``: an on-call tool or the SDK producing an acknowledgement
there is refused by the broker with TOPIC_AUTHORIZATION_FAILED, and the record is not on the topic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse import schemas
from llmpulse.connection import client_config
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.secure_kafka import SecuredKafka, secured_broker

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
