"""Least-privilege Kafka ACLs for llmpulse's principals, and the authorizer that enforces them on the secured
local broker (``LocalBroker`` with ``secure=True, acls=True``; off by default so other uses are unaffected).

``GRANTS`` is the table in docs/operations.md ("Kafka ACLs"), for the default topic names and app id: the
worker, the SDK and on-call tools each get only what they use. ``admin`` (the broker's own login) is a super
user; so is ``ANONYMOUS``, the principal of the local broker's PLAINTEXT controller listener on loopback.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llmpulse.config import KafkaSecurity


class Grant(NamedTuple):
    principal: str  # user name, e.g. "worker"
    resource: str  # "topic", "group" or "cluster"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


_RW = ("READ", "WRITE", "DESCRIBE")
GRANTS: tuple[Grant, ...] = (
    Grant("worker", "topic", "llm-calls", ("READ", "DESCRIBE")),
    *(Grant("worker", "topic", topic, _RW) for topic in ("llm-alerts", "llm-alert-commands", "llm-fleet")),
    *(Grant("worker", "topic", topic, ("WRITE", "DESCRIBE")) for topic in ("llm-dead-letter", "llm-provider-state")),
    Grant("worker", "topic", "llmpulse-", ("CREATE", *_RW), prefixed=True),
    Grant("worker", "group", "llmpulse", ("READ",)),
    Grant("worker", "group", "llmpulse-alert-directory", ("READ",)),
    Grant("worker", "cluster", "kafka-cluster", ("CREATE",)),
    Grant("sdk", "topic", "llm-calls", ("WRITE", "DESCRIBE")),
    Grant("sdk", "topic", "llm-provider-state", ("READ", "DESCRIBE")),
    Grant("sdk", "group", "llmpulse-router-", ("READ",), prefixed=True),
    Grant("oncall", "topic", "llm-alerts", ("READ", "DESCRIBE")),
    Grant("oncall", "group", "llmpulse-alerts-tail", ("READ",)),
    Grant("oncall", "group", "llmpulse-alerts-forward", ("READ",)),
    Grant("oncall", "group", "llmpulse-export-", ("READ",), prefixed=True),
)


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
