"""Least-privilege Kafka ACLs for llmpulse's principals, and the authorizer that enforces them on the secured
local broker (``LocalBroker`` with ``secure=True, acls=True``; off by default so other uses are unaffected).

``GRANTS`` is the table in docs/operations.md ("Kafka ACLs"), for the default topic names and app id: the
worker, the SDK and on-call tools each get only what they use. ``admin`` (the broker's own login) is a super
user; so is ``ANONYMOUS``, the principal of the local broker's PLAINTEXT controller listener on loopback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from llmpulse.config import KafkaSecurity, Topics


class Grant(NamedTuple):
    principal: str  # user name, e.g. "worker"
    resource: str  # "topic", "group" or "cluster"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


_RW = ("READ", "WRITE", "DESCRIBE")
_READ = ("READ", "DESCRIBE")
_WRITE = ("WRITE", "DESCRIBE")
_CONFIGS = ("DESCRIBE_CONFIGS", "ALTER_CONFIGS")  # compaction of the compacted topics it writes (processors/topics.py)
DEFAULT_APP_ID = "llmpulse"
ALERT_DIRECTORY_GROUP = "llmpulse-alert-directory"  # the worker's reader of every alert (processors/alert_directory.py)
# consumer groups the on-call commands join (llmpulse/commands: alerts tail, alerts forward, export)
ONCALL_GROUPS = ("llmpulse-alerts-tail", "llmpulse-alerts-forward")
EXPORT_GROUP_PREFIX = "llmpulse-export-"


def grants(topics: Topics | None = None, app_id: str = DEFAULT_APP_ID,
           principals: Mapping[str, str] | None = None) -> tuple[Grant, ...]:
    """Least-privilege grants for these topic names and the worker's app id (``LLMPULSE_APP_ID``); ``principals``
    renames the users (``{"worker": "svc-llmpulse"}``), which are otherwise ``worker``, ``sdk`` and ``oncall``.

    The worker reads calls (and OTLP spans), reads and writes what it keeps for itself (alerts, commands, the
    fleet topic), writes what others follow (dead letters, provider and budget state, model routes), owns the
    topics and the consumer group faust names after its app id, and creates the topics it uses; it sets the
    compaction of the compacted topics it writes (DESCRIBE_CONFIGS, ALTER_CONFIGS). The SDK writes
    calls and its writer schemas, and reads the compacted topics its router and admission gate follow; it assigns
    partitions itself and never joins a group. On-call tools read alerts, in their own groups."""
    t = topics or Topics()
    named = {"worker": "worker", "sdk": "sdk", "oncall": "oncall", **(principals or {})}
    return tuple(grant._replace(principal=named[grant.principal]) for grant in (
        *(Grant("worker", "topic", topic, _READ) for topic in (t.calls, t.otlp, t.schemas)),
        *(Grant("worker", "topic", topic, _RW) for topic in (t.alerts, t.alert_commands, t.fleet)),
        Grant("worker", "topic", t.dead_letter, _WRITE),
        *(Grant("worker", "topic", topic, (*_WRITE, *_CONFIGS))
          for topic in (t.provider_state, t.budget_state, t.model_routes)),
        Grant("worker", "topic", f"{app_id}-", ("CREATE", *_RW, *_CONFIGS), prefixed=True),  # faust changelogs, leader
        Grant("worker", "group", app_id, ("READ",)),
        Grant("worker", "group", ALERT_DIRECTORY_GROUP, ("READ",)),
        Grant("worker", "cluster", "kafka-cluster", ("CREATE",)),
        *(Grant("sdk", "topic", topic, _WRITE) for topic in (t.calls, t.schemas)),
        *(Grant("sdk", "topic", topic, _READ) for topic in (t.provider_state, t.budget_state, t.model_routes)),
        Grant("oncall", "topic", t.alerts, _READ),
        *(Grant("oncall", "group", group, ("READ",)) for group in ONCALL_GROUPS),
        Grant("oncall", "group", EXPORT_GROUP_PREFIX, ("READ",), prefixed=True),
    ))


GRANTS: tuple[Grant, ...] = grants()  # the defaults: the table in docs/operations.md


def authorizer_properties(admin: str) -> dict[str, str]:
    """Broker properties that turn on KRaft's StandardAuthorizer and deny whatever no ACL allows."""
    return {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{admin};User:ANONYMOUS",
    }


def bindings(grants: tuple[Grant, ...] = GRANTS) -> list[Any]:
    """confluent-kafka AclBindings, one per (grant, operation)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}
    return [AclBinding(kinds[grant.resource], grant.name,
                       ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
                       f"User:{grant.principal}", "*", AclOperation[operation], AclPermissionType.ALLOW)
            for grant in grants for operation in grant.operations]


def apply(bootstrap: str, admin: KafkaSecurity, grants: tuple[Grant, ...] = GRANTS, timeout: float = 30.0) -> int:
    """Create every ACL of ``grants`` as the admin user (creating an existing ACL is a no-op); how many."""
    from confluent_kafka.admin import AdminClient

    from llmpulse.connection import client_config

    client = AdminClient(client_config(bootstrap, admin, "llmpulse.broker.kafka"))
    acls = bindings(grants)
    for future in client.create_acls(acls, request_timeout=timeout).values():
        future.result()
    return len(acls)


def kafka_acls_commands(grants: tuple[Grant, ...] = GRANTS) -> list[str]:
    """The same grants as ``kafka-acls.sh`` command lines, one per grant, for an admin to run on a cluster."""
    options = {"topic": "--topic {}", "group": "--group {}", "cluster": "--cluster"}
    return [" ".join([
        'kafka-acls.sh --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --command-config admin.properties --add',
        f"--allow-principal User:{grant.principal}",
        *(f"--operation {_camel(operation)}" for operation in grant.operations),
        options[grant.resource].format(grant.name),
        *(["--resource-pattern-type prefixed"] if grant.prefixed else []),
    ]) for grant in grants]


def _camel(operation: str) -> str:
    """kafka-acls.sh's name of an operation: DESCRIBE_CONFIGS -> DescribeConfigs."""
    return "".join(word.capitalize() for word in operation.split("_"))
