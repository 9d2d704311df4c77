"""Create the topics llmpulse uses (idempotent), before a worker subscribes to them.

faust only declares its own internal topics (changelogs); the calls, alerts, dead-letter, command and
provider-state topics are ours to create, with the same partition count so faust co-partitions them.

Compacted topics (the state tables' changelogs, provider and budget state, model routes, schemas) are read whole
by whoever starts on them: a worker taking over a state partition, a restarted worker (its tables live in memory),
an SDK loading budget state. A worker reads ~10,000 state records a second when it starts. With a broker's
defaults a changelog keeps far more than its live keys: Kafka compacts only closed segments, which close at 1 GiB
or after 7 days, and keeps a deleted key's tombstone a day after compacting it (the slots of the latency and
traffic windows are deleted as they fold and expire: at 1,000 series and 50 calls/s, ~430,000 tombstones an
hour against ~100,000 live keys; docs/operations.md, "What a start reads"). Such topics get ``COMPACTION``
when created, and when they exist with the broker's values (``ensure_compaction``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic

from llmpulse.config import KafkaSecurity, Topics
from llmpulse.connection import client_config

log = logging.getLogger(__name__)
_WEEK_MS = str(7 * 24 * 3600 * 1000)
# The largest record a worker reads or writes: calls batches, OTLP requests and state blobs (a budget bucket holds
# every user's spend of the period). The topics allow it, the clients send and fetch it.
MAX_RECORD_BYTES = 16 * 1024 * 1024
# A compacted topic's segment closes (and can be compacted) at 32 MiB or after 10 minutes, whichever comes first (a
# segment must hold the largest record batch, so no less than MAX_RECORD_BYTES), and a tombstone goes an hour after
# its key was compacted. A reader that takes longer than that to reach a tombstone can miss it and keep the key:
# the state's readers tolerate it (a restored slot already folded or expired is deleted again, slots.py).
COMPACTION = {"segment.bytes": str(2 * MAX_RECORD_BYTES), "segment.ms": str(10 * 60 * 1000),
              "delete.retention.ms": str(3600 * 1000)}
STATE_TABLE = "llmpulse-state"  # the calls engines' table (faust's changelog topic: changelog_topics)
FLEET_TABLE = "llmpulse-fleet"  # the fleet engine's


class TopicLayoutError(ValueError):
    """An existing topic the worker reads cannot be co-partitioned with the calls topic."""


def topic_specs(topics: Topics, partitions: int, otlp: bool = False) -> list[NewTopic]:
    """Every topic the worker uses; ``otlp``: also the OTLP spans topic (its ingest is on)."""

    def topic(name: str, **config: str) -> NewTopic:
        return NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)

    compacted = {"cleanup.policy": "compact", **COMPACTION}
    specs = [
        topic(topics.calls, **{"retention.ms": _WEEK_MS, "max.message.bytes": str(MAX_RECORD_BYTES)}),
        topic(topics.alerts, **{"retention.ms": str(30 * 24 * 3600 * 1000)}),
        topic(topics.dead_letter, **{"retention.ms": str(14 * 24 * 3600 * 1000)}),
        topic(topics.alert_commands, **{"retention.ms": _WEEK_MS}),
        topic(topics.provider_state, **compacted),
        topic(topics.budget_state, **compacted),
        topic(topics.model_routes, **compacted),
        NewTopic(topics.fleet, num_partitions=1, replication_factor=1, config={"retention.ms": _WEEK_MS}),
        NewTopic(topics.schemas, num_partitions=1, replication_factor=1, config=compacted),
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


def changelog_topics(app_id: str) -> list[str]:
    """The state tables' changelog topics, as faust names them (it creates them, with ``COMPACTION``)."""
    return [f"{app_id}-{table}-changelog" for table in (STATE_TABLE, FLEET_TABLE)]


def ensure_compaction(admin: AdminClient, names: list[str], timeout: float = 30.0) -> list[str]:
    """Give these existing compacted topics ``COMPACTION`` where they take the broker's values (created by an
    older worker, or by hand without them); a value set on the topic itself is an operator's and stays. Returns
    the names changed. A topic whose configs the worker may not read or change (a secured cluster's ACLs without
    DESCRIBE_CONFIGS and ALTER_CONFIGS on it) is named in a warning and left as it is."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    changes: list[ConfigResource] = []
    for resource, future in (admin.describe_configs(resources, request_timeout=timeout).items() if names else ()):
        try:
            configs = future.result(timeout)
        except KafkaException as exc:
            _compaction_left(resource.name, exc)
            continue
        entries = [ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                   for key, value in COMPACTION.items()
                   if configs[key].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value]
        if entries:
            changes.append(ConfigResource(ConfigResource.Type.TOPIC, resource.name, incremental_configs=entries))
    altered = []
    for resource, future in (admin.incremental_alter_configs(changes, request_timeout=timeout).items()
                             if changes else ()):
        try:
            future.result(timeout)
            altered.append(resource.name)
        except KafkaException as exc:
            _compaction_left(resource.name, exc)
    if altered:
        log.info("compaction settings %s set on %s", COMPACTION, ", ".join(sorted(altered)))
    return sorted(altered)


def _compaction_left(topic: str, exc: KafkaException) -> None:
    log.warning("left the compaction settings of topic %s as they are (%s): whoever starts on it reads what the "
                "broker's defaults keep (topics.py)", topic, exc.args[0].str())


def ensure_topics(bootstrap: str, security: KafkaSecurity, topics: Topics, partitions: int,
                  timeout: float = 30.0, otlp: bool = False, app_id: str | None = None) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are, but for the
    compaction settings of the compacted ones the worker writes, with ``app_id`` the state changelogs too
    (``ensure_compaction``); one whose partition count cannot serve ``partitions`` (``layout_problems``) stops
    the worker with TopicLayoutError before it starts, instead of failing on the first record of a partition the
    other topics lack."""
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
    # the compacted topics the worker writes (not the schemas topic: the SDK's, a record per writer schema)
    written = [topics.provider_state, topics.budget_state, topics.model_routes, *(changelog_topics(app_id)
                                                                                 if app_id else [])]
    ensure_compaction(admin, [name for name in written if name in existing], timeout)
    return created
