"""The least-privilege ACL table (llmpulse/broker_acls.py) and ``llmpulse acls``: what each principal is granted
for the configured names, and the kafka-acls.sh lines an admin copies."""

from __future__ import annotations

from dataclasses import fields

import typer
from typer.testing import CliRunner

from llmpulse.broker_acls import GRANTS, Grant, grants, kafka_acls_commands
from llmpulse.commands import acls, alerts, forward
from llmpulse.config import Topics


def _rights(table: tuple[Grant, ...], principal: str, resource: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for grant in table:
        if grant.principal == principal and grant.resource == resource:
            out.setdefault(grant.name, set()).update(grant.operations)
    return out


def test_the_worker_may_use_every_topic_and_only_it_writes_alerts_and_commands() -> None:
    topics = Topics()
    worker = _rights(GRANTS, "worker", "topic")
    assert {getattr(topics, item.name) for item in fields(Topics)} <= set(worker)
    for principal in ("sdk", "oncall"):
        written = {name for name, operations in _rights(GRANTS, principal, "topic").items() if "WRITE" in operations}
        assert written.isdisjoint({topics.alerts, topics.alert_commands, topics.fleet})
    assert _rights(GRANTS, "sdk", "topic")[topics.calls] == {"WRITE", "DESCRIBE"}
    assert _rights(GRANTS, "oncall", "topic") == {topics.alerts: {"READ", "DESCRIBE"}}


def test_grants_follow_the_configured_names_and_principals() -> None:
    table = grants(Topics(calls="prod-calls", alerts="prod-alerts"), app_id="pulse-eu",
                   principals={"worker": "svc-pulse", "oncall": "sre"})
    assert {grant.principal for grant in table} == {"svc-pulse", "sdk", "sre"}
    assert _rights(table, "svc-pulse", "topic")["prod-calls"] == {"READ", "DESCRIBE"}
    assert _rights(table, "sre", "topic") == {"prod-alerts": {"READ", "DESCRIBE"}}
    owned = [grant for grant in table if grant.name == "pulse-eu-"]
    assert [(grant.resource, grant.prefixed) for grant in owned] == [("topic", True)]  # faust's changelogs
    assert "pulse-eu" in _rights(table, "svc-pulse", "group")


def test_the_groups_granted_to_on_call_are_the_ones_its_commands_use() -> None:
    assert {alerts.TAIL_GROUP, forward.GROUP} <= set(_rights(GRANTS, "oncall", "group"))


def test_acls_prints_kafka_acls_commands_for_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMPULSE_TOPICS__CALLS", "team-calls")
    monkeypatch.setenv("LLMPULSE_APP_ID", "team-pulse")
    app = typer.Typer()
    acls.register(app)
    result = CliRunner().invoke(app, ["--sdk", "checkout-svc"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines == kafka_acls_commands(grants(Topics(calls="team-calls"), "team-pulse", {"sdk": "checkout-svc"}))
    assert ("--allow-principal User:checkout-svc --operation Write --operation Describe --topic team-calls"
            in "\n".join(lines))
    assert any(line.endswith("--operation DescribeConfigs --operation AlterConfigs --topic team-pulse- "
                             "--resource-pattern-type prefixed") for line in lines)
