"""On-call against two real workers of one group: ``llmpulse alerts tail`` shows incidents with their member alerts
folded under them (``--members`` unfolds them, ``--json`` prints the records), ``llmpulse alerts ack`` acknowledges
an incident and its members, and an acknowledgement made through one worker's API is seen through the other's.

Slow checkout calls open a CRITICAL incident (latency p95 and p99 on one series: two members, announced at once);
faq calls that decline 30 % of their answers raise a ``no_answer_rate`` alert in another family.
(The view without Kafka: tests/unit/test_alerts_cli.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from llmpulse.producers import Pulse
from tests.support.kafka import read_alert_records
from tests.support.waiting import wait_until
from tests.support.worker import API_TOKEN, WorkerProcess

pytestmark = pytest.mark.timeout(180)


def _owned(worker: WorkerProcess) -> tuple[set[str], bool]:
    """(calls partitions, owns the fleet stage) of one worker."""
    status, body = worker.get("/api/budgets")
    return (set(body["partitions"]), body["fleet"] is not None) if status == 200 else (set(), False)


def _settled(first: WorkerProcess, second: WorkerProcess) -> bool:
    (a, a_fleet), (b, b_fleet) = _owned(first), _owned(second)
    return bool(a) and bool(b) and a | b == {"0", "1", "2"} and not a & b and a_fleet != b_fleet


@pytest.fixture(scope="module")
def pair(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, ...]]:
    first = WorkerProcess(kafka_bootstrap, tmp_path_factory.mktemp("oncall-a"))
    second = WorkerProcess(kafka_bootstrap, tmp_path_factory.mktemp("oncall-b"), app_id=first.app_id)
    try:
        first.start()
        second.start()
        assert wait_until(lambda: _settled(first, second), 60), (_owned(first), _owned(second))
        with Pulse(service="checkout", bootstrap_servers=kafka_bootstrap, topic=first.topic("calls"),
                   linger_ms=20) as pulse:
            for i in range(60):
                pulse.record(provider="openai", request_model="gpt-4o", latency_ms=6000.0 + i, input_tokens=120,
                             output_tokens=40)
            for i in range(100):
                pulse.record(service="faq", provider="openai", request_model="gpt-4o-mini", latency_ms=400.0,
                             input_tokens=120, output_tokens=40, no_answer=i < 30)
            assert pulse.flush(15) == 0
        assert wait_until(lambda: _latency_incident(first) and _alert(first, "no_answer_rate"), 45, step=0.3), (
            f"{first.log_tail(20)}\n{second.log_tail(20)}")
        yield first, second
    finally:
        first.stop()
        second.stop()


def _latency_incident(worker: WorkerProcess) -> dict[str, Any] | None:
    """The checkout incident once it lists both latency members."""
    _, body = worker.get("/api/incidents")
    for incident in (body or {}).get("incidents", []):
        if {m["rule"] for m in incident["members"]} == {"latency_p95", "latency_p99"}:
            return incident
    return None


def _alert(worker: WorkerProcess, rule: str, status: str | None = None) -> dict[str, Any] | None:
    _, body = worker.get("/api/alerts" + (f"?status={status}" if status else ""))
    return next((a for a in (body or {}).get("alerts", []) if a["rule"] == rule), None)


def _cli(worker: WorkerProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "llmpulse.cli", *args], env=worker.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen[str]) -> list[str]:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out.splitlines()


def test_tail_folds_members_under_their_incident_and_unfolds_them_with_members_or_json(
    pair: tuple[WorkerProcess, ...],
) -> None:
    worker = pair[0]
    incident = _latency_incident(worker)
    assert incident is not None
    members = {m["alert_id"]: m["rule"] for m in incident["members"]}
    on_topic = {(kind, r["incident_id"] if kind == "incident" else r["alert_id"], r["status"])
                for kind in ("alert", "incident")
                for r in read_alert_records(worker.bootstrap, worker.topic("alerts"), kind, timeout=3)}
    follow = ("alerts", "tail", "--from-beginning", "--timeout", "5")
    default, unfolded, records = (_cli(worker, *follow, *extra) for extra in ((), ("--members",), ("--json",)))
    default, unfolded, records = _finish(default), _finish(unfolded), _finish(records)

    # Default: the incident's line, its mitigation (it paged), then its two members indented under it; a member
    # is never printed on its own.
    head = next(i for i, line in enumerate(default) if line.endswith(f"id={incident['incident_id']}"))
    assert "CRITICAL" in default[head] and "(2 alerts)" in default[head] and incident["summary"] in default[head]
    assert default[head + 1].strip() == f"mitigation: {incident['mitigation']}"
    folded = {line.split()[-1].removeprefix("id="): line for line in default[head + 2:head + 4]}
    assert folded.keys() == members.keys(), default[head:head + 4]
    assert all(line.strip().startswith("- ") and members[i] in line for i, line in folded.items())
    for alert_id in members:
        assert all(line.strip().startswith("- ") for line in default if f"id={alert_id}" in line)

    # --members: the incident is one line, and every member alert event is a line of its own.
    head = next(i for i, line in enumerate(unfolded) if line.endswith(f"id={incident['incident_id']}"))
    assert not any(line.strip().startswith("- ") for line in unfolded), unfolded[head:head + 4]
    for alert_id, rule in members.items():
        own = [line for line in unfolded if f"id={alert_id}" in line]
        assert own and all(rule in line for line in own), unfolded

    # --json: one object per record with its kind, every record the topic held when the tails started.
    printed = [json.loads(line) for line in records]
    seen = {(r["kind"], r["incident_id"] if r["kind"] == "incident" else r["alert_id"], r["status"])
            for r in printed}
    assert on_topic <= seen, on_topic - seen
    [opened] = [r for r in printed if r["kind"] == "incident" and r["incident_id"] == incident["incident_id"]
                and r["status"] == "opened"]
    assert {m["alert_id"] for m in opened["members"]} == set(members)


def test_ack_acknowledges_the_incident_and_its_members_on_every_worker(pair: tuple[WorkerProcess, ...]) -> None:
    first = pair[0]
    incident = _latency_incident(first)
    assert incident is not None
    members = {m["alert_id"] for m in incident["members"]}

    ack = _cli(first, "alerts", "ack", incident["incident_id"], "--url", first.url, "--token", API_TOKEN,
               "--actor", "oncall-cli")
    answer = json.loads("\n".join(_finish(ack)))
    assert (answer["kind"], answer["actor"], set(answer["members"])) == ("incident", "oncall-cli", members)

    def acknowledged(worker: WorkerProcess) -> tuple[Any, ...] | None:
        """The incident once acknowledged with every member (its newest event may be the members' update)."""
        _, incidents = worker.get("/api/incidents?status=acknowledged")  # acknowledged now, whatever came after
        _, alerts = worker.get("/api/alerts?status=acknowledged")
        mine = next((i for i in incidents["incidents"] if i["incident_id"] == incident["incident_id"]), None)
        if mine is None:
            return None
        acked = {a["alert_id"]: a["acknowledged_by"] for a in alerts["alerts"] if a["alert_id"] in members}
        listed = {m["alert_id"]: m["status"] for m in mine["members"]}
        done = mine["acknowledged_by"] and len(acked) == len(members) and set(listed.values()) == {"acknowledged"}
        return (mine, acked) if done else None

    for worker in pair:  # every worker answers the same, whichever owns the incident and its members
        seen = wait_until(lambda w=worker: acknowledged(w), 30, step=0.3)
        assert seen, (f"{worker.url}: incidents {worker.get('/api/incidents')[1]}; owned (calls and commands "
                      f"partitions, fleet): {[_owned(w) for w in pair]}")
        shown, acked = seen
        assert shown["acknowledged_by"] == "oncall-cli" and acked == dict.fromkeys(members, "oncall-cli")
    on_topic = read_alert_records(first.bootstrap, first.topic("alerts"), "incident", timeout=10,
                                  until=lambda v: any(r["status"] == "acknowledged" for r in v))
    assert [r["acknowledged_by"] for r in on_topic
            if r["incident_id"] == incident["incident_id"] and r["status"] == "acknowledged"] == ["oncall-cli"]


def test_an_acknowledgement_through_one_worker_is_seen_through_the_other(pair: tuple[WorkerProcess, ...]) -> None:
    alert = _alert(pair[0], "no_answer_rate", "firing")
    assert alert is not None and alert["service"] == "faq"
    _, metrics = pair[0].get("/api/metrics")
    faq_here = any(row["service"] == "faq" for row in metrics["series"])
    owner, other = pair if faq_here else pair[::-1]  # the worker computing faq's alerts, and the other one
    path = f"/api/alerts/{alert['alert_id']}/acknowledge"

    assert other.request("POST", path, json.dumps({"actor": "bob"}).encode())[0] == 401
    status, body = other.request("POST", path, json.dumps({"actor": "alice"}).encode(),
                                 {"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 202, body

    for worker in (owner, other):
        seen = wait_until(lambda w=worker: _alert(w, "no_answer_rate", "acknowledged"), 30, step=0.3)
        assert seen and seen["alert_id"] == alert["alert_id"] and seen["acknowledged_by"] == "alice", worker.url
    assert owner.metric("llmpulse_alerts_emitted_total", rule="no_answer_rate", status="acknowledged") == 1
