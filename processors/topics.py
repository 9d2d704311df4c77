"""Create the topics llmpulse uses (idempotent), before a worker subscribes to them.

faust only declares its own internal topics (changelogs); the calls, alerts, dead-letter, command and
provider-state topics are ours to create, with the same partition count so faust co-partitions them.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse.config import KafkaSecurity, Topics
from llmpulse.connection import client_config

log = logging.getLogger(__name__)
_WEEK_MS = str(7 * 24 * 3600 * 1000)


class TopicLayoutError(ValueError):
    """An existing topic the worker reads cannot be co-partitioned with the calls topic."""


def topic_specs(topics: Topics, partitions: int, otlp: bool = False) -> list[NewTopic]:
    """Every topic the worker uses; ``otlp``: also the OTLP spans topic (its ingest is on)."""

    def topic(name: str, **config: str) -> NewTopic:
        return NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)

    specs = [
        topic(topics.calls, **{"retention.ms": _WEEK_MS, "max.message.bytes": str(16 * 1024 * 1024)}),
        topic(topics.alerts, **{"retention.ms": str(30 * 24 * 3600 * 1000)}),
        topic(topics.dead_letter, **{"retention.ms": str(14 * 24 * 3600 * 1000)}),
        topic(topics.alert_commands, **{"retention.ms": _WEEK_MS}),
        topic(topics.provider_state, **{"cleanup.policy": "compact"}),
        topic(topics.budget_state, **{"cleanup.policy": "compact"}),
        topic(topics.model_routes, **{"cleanup.policy": "compact"}),
        NewTopic(topics.fleet, num_partitions=1, replication_factor=1, config={"retention.ms": _WEEK_MS}),
        NewTopic(topics.schemas, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}),
    ]
    if otlp:
        specs.append(topic(topics.otlp, **{"retention.ms": _WEEK_MS, "max.message.bytes": str(16 * 1024 * 1024)}))
    return specs


def ensure_topics(bootstrap: str, security: KafkaSecurity, topics: Topics, partitions: int,
                  timeout: float = 30.0, otlp: bool = False) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are, except that an
    OTLP topic (``otlp``) created by someone else must have ``partitions`` partitions: its partition p shares the
    state-table partition p with calls partition p, so both must be assigned to the same worker."""
    admin = AdminClient(client_config(bootstrap, security, "llmpulse.topics.librdkafka"))
    existing = admin.list_topics(timeout=timeout).topics
    if otlp and topics.otlp in existing and len(existing[topics.otlp].partitions) != partitions:
        raise TopicLayoutError(
            f"topic {topics.otlp} has {len(existing[topics.otlp].partitions)} partitions; OTLP ingest needs "
            f"{partitions}, as many as {topics.calls} (LLMPULSE_TOPIC_PARTITIONS): recreate it with "
            f"{partitions} partitions or point LLMPULSE_TOPICS__OTLP at a topic that has them")
    wanted = [spec for spec in topic_specs(topics, partitions, otlp) if spec.topic not in existing]
    created = []
    for name, future in (admin.create_topics(wanted, operation_timeout=timeout) if wanted else {}).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another worker won the race
                raise
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created
