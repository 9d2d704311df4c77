"""Create the topics llmpulse uses (idempotent), before a worker subscribes to them.

faust only declares its own internal topics (changelogs); the calls, alerts, dead-letter, command and
provider-state topics are ours to create, with the same partition count so faust co-partitions them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse.config import KafkaSecurity, Topics
from llmpulse.connection import client_config

log = logging.getLogger(__name__)
_WEEK_MS = str(7 * 24 * 3600 * 1000)
# The largest record a worker reads or writes: calls batches, OTLP requests and state blobs (a budget bucket holds
# every user's spend of the period). The topics allow it, the clients send and fetch it.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class TopicLayoutError(ValueError):
    """An existing topic the worker reads cannot be co-partitioned with the calls topic."""


def topic_specs(topics: Topics, partitions: int, otlp: bool = False) -> list[NewTopic]:
    """Every topic the worker uses; ``otlp``: also the OTLP spans topic (its ingest is on)."""

    def topic(name: str, **config: str) -> NewTopic:
        return NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)

    specs = [
        topic(topics.calls, **{"retention.ms": _WEEK_MS, "max.message.bytes": str(MAX_RECORD_BYTES)}),
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
        specs.append(topic(topics.otlp, **{"retention.ms": _WEEK_MS, "max.message.bytes": str(MAX_RECORD_BYTES)}))
    return specs


def layout_problems(topics: Topics, partitions: int, existing: Mapping[str, int], otlp: bool = False) -> list[str]:
    """Why topics created by someone else cannot serve a worker of ``partitions`` partitions (``existing``: name ->
    partition count). Calls partition p (and OTLP partition p) is state-table partition p, so they need exactly
    ``partitions``; the worker writes alerts, dead letters and state for calls partition p to partition p of
    those topics, so they need at least as many."""
    exact = [topics.calls, *([topics.otlp] if otlp else [])]
    at_least = [topics.alerts, topics.dead_letter, topics.alert_commands, topics.provider_state,
                topics.budget_state, topics.model_routes]
    def has(name: str) -> str:
        return f"{name} has {existing[name]} partition{'' if existing[name] == 1 else 's'}"

    problems = [f"{has(name)}, not {partitions}" for name in exact
                if name in existing and existing[name] != partitions]
    problems += [f"{has(name)}, fewer than {partitions}" for name in at_least
                 if name in existing and existing[name] < partitions]
    return problems


def ensure_topics(bootstrap: str, security: KafkaSecurity, topics: Topics, partitions: int,
                  timeout: float = 30.0, otlp: bool = False) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are; one whose
    partition count cannot serve ``partitions`` (``layout_problems``) stops the worker with TopicLayoutError
    before it starts, instead of failing on the first record of a partition the other topics lack."""
    admin = AdminClient(client_config(bootstrap, security, "llmpulse.topics.librdkafka"))
    existing = admin.list_topics(timeout=timeout).topics
    problems = layout_problems(topics, partitions, {name: len(meta.partitions) for name, meta in existing.items()},
                               otlp)
    if problems:
        raise TopicLayoutError(
            f"{'; '.join(problems)}: set LLMPULSE_TOPIC_PARTITIONS to the partition count of {topics.calls}, "
            "or recreate the topics with it (every topic but the fleet and schemas topics co-partitions with the "
            "calls topic)")
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
