"""``llmpulse alerts forward`` against a real Alertmanager (deploy/alertmanager/alertmanager.yml) and a local
webhook, fed from a real alerts topic carrying member alerts and incidents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import Producer

from llmpulse import schemas
from llmpulse.processors.core.incidents import IncidentEvent, IncidentManager
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.servers import Server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)
CODEC = SchemaCodec(schemas.ALERT)
INCIDENT_CODEC = SchemaCodec(schemas.INCIDENT)


def alert(status: str, updated_ms: int, started_ms: int, **fields: Any) -> dict[str, Any]:
    return {
        "alert_id": "inc-42", "fingerprint": "latency_p95|checkout|gpt-4o", "rule": "latency_p95",
        "severity": "CRITICAL", "priority": "P0", "status": status, "service": "checkout", "model": "gpt-4o",
        "provider": "openai", "summary": "p95 latency 6.1 s over 1m (threshold 5 s)", "observed": 6.1,
        "threshold": 5.0, "window": "1m", "started_at_ms": started_ms, "updated_at_ms": updated_ms,
        "mitigation": "fail over to the secondary provider", "acknowledged_by": None,
        "labels": {"team": "payments"}, **fields,
    }


def member(alert_id: str, rule: str, severity: str, started_ms: int, status: str = "firing",
           updated_ms: int | None = None) -> dict[str, Any]:
    """A member alert on checkout/gpt-4o/openai."""
    return alert(status, updated_ms or started_ms, started_ms, alert_id=alert_id, rule=rule, severity=severity,
                 priority={"CRITICAL": "P0", "ERROR": "P1", "WARNING": "P2"}[severity],
                 fingerprint=f"{rule}|checkout|gpt-4o", summary=f"{rule} on checkout")


def produce(bootstrap: str, topic: str, *records: dict[str, Any] | IncidentEvent) -> None:
    """Alerts keyed by fingerprint; incidents on partition 0 keyed by incident id, as the worker writes them."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for record in records:
        if isinstance(record, IncidentEvent):
            producer.produce(topic, INCIDENT_CODEC.encode(record.to_record()), key=record.incident_id.encode(),
                             partition=0)
        else:
            producer.produce(topic, CODEC.encode(record), key=record["fingerprint"].encode())
    assert producer.flush(15) == 0


def forward(bootstrap: str, topic: str, group: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run the forwarder to completion; returns its exit summary."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "LLMPULSE_TOPIC_ALERTS": topic}
    result = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli", "alerts", "forward", "--group", group, "--timeout", str(timeout),
         *args],
        env=env, capture_output=True, text=True, timeout=timeout + 30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])["forward"]  # type: ignore[no-any-return]


def am_alerts(server: Server, fingerprint: str | None = None, incident_id: str | None = None) -> list[dict[str, Any]]:
    """Alertmanager's current (unresolved) alerts carrying our fingerprint or incident_id label."""
    with urllib.request.urlopen(f"{server.url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
    if incident_id is not None:
        return [a for a in alerts if a["labels"].get("incident_id") == incident_id]
    return [a for a in alerts if a["labels"].get("fingerprint") == fingerprint]


def test_firing_then_resolved_reaches_alertmanager_and_a_restart_resumes(
    alertmanager: Server, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("alerts", 3)
    group = f"forward-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    firing = alert("firing", now - 2_000, now - 2_000)
    acked = alert("acknowledged", now - 1_000, now - 2_000, acknowledged_by="oncall")
    produce(kafka_bootstrap, topic, firing, firing, acked)  # the worker re-emitting an event must not matter

    first = forward(kafka_bootstrap, topic, group, "--alertmanager", alertmanager.url, "--from-beginning",
                    "--max", "2")

    assert (first["forwarded"], first["duplicates"], first["rejected"]) == (2, 1, 0)
    [active] = am_alerts(alertmanager, firing["fingerprint"])
    assert active["status"]["state"] == "active"
    assert active["labels"] == {
        "alertname": "latency_p95", "llmpulse_kind": "alert", "severity": "critical", "priority": "P0",
        "fingerprint": "latency_p95|checkout|gpt-4o", "service": "checkout", "model": "gpt-4o",
        "provider": "openai", "team": "payments",
    }
    assert active["annotations"]["summary"] == firing["summary"]
    assert active["annotations"]["mitigation"] == "fail over to the secondary provider"
    assert active["annotations"]["acknowledged_by"] == "oncall"
    assert (active["annotations"]["observed"], active["annotations"]["threshold"]) == ("6.1", "5")
    assert active["receivers"] == [{"name": "llmpulse-null"}]  # a member alert is detail: the incident pages

    resolved = alert("resolved", int(time.time() * 1000), now - 2_000)
    produce(kafka_bootstrap, topic, resolved)
    # Same group, no --from-beginning: resumes after the committed offset, sends only the new event.
    second = forward(kafka_bootstrap, topic, group, "--alertmanager", alertmanager.url, "--max", "1")

    assert (second["forwarded"], second["replayed"]) == (1, 3)
    assert wait_until(lambda: am_alerts(alertmanager, firing["fingerprint"]) == [], 15, step=0.2), "alert still active"


def test_an_incident_is_one_alertmanager_alert_from_open_through_escalation_to_resolve(
    alertmanager: Server, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("alerts", 3)
    group = f"forward-{uuid.uuid4().hex[:8]}"
    t0 = int(time.time() * 1000) - 120_000
    incidents = IncidentManager()
    slow = member("a-slow", "latency_p95", "WARNING", t0)
    assert incidents.apply([slow]) == []  # a WARNING incident waits for members crossing together
    [opened] = incidents.tick(t0 + 10 * 60_000)  # announced once its group wait is over
    produce(kafka_bootstrap, topic, slow, opened)

    forward(kafka_bootstrap, topic, group, "--alertmanager", alertmanager.url, "--from-beginning", "--max", "2")

    [page] = am_alerts(alertmanager, incident_id=opened.incident_id)
    assert page["labels"] == {
        "alertname": "llmpulse_incident", "llmpulse_kind": "incident", "incident_id": opened.incident_id,
        "family": "availability", "severity": "warning", "priority": "P2",
    }
    assert page["receivers"] == [{"name": "llmpulse-pager"}]  # P2 pages, grouped by incident_id
    notes = page["annotations"]
    assert (notes["status"], notes["scope"], notes["scope_key"]) == ("opened", "series", "checkout/gpt-4o/openai")
    assert (notes["member_count"], notes["members"], notes["summary"]) == ("1", "a-slow", opened.summary)
    [detail] = am_alerts(alertmanager, slow["fingerprint"])
    assert detail["labels"]["llmpulse_kind"] == "alert" and detail["receivers"] == [{"name": "llmpulse-null"}]

    errors = member("a-err", "error_rate", "CRITICAL", t0 + 40_000)
    [escalated] = incidents.apply([errors])
    assert escalated.status == "escalated"
    produce(kafka_bootstrap, topic, errors, escalated)
    forward(kafka_bootstrap, topic, group, "--alertmanager", alertmanager.url, "--max", "2")

    # Still one alert for the incident: the warning/P2 label set was ended when the critical/P0 one came.
    [page] = am_alerts(alertmanager, incident_id=opened.incident_id)
    assert (page["labels"]["severity"], page["labels"]["priority"]) == ("critical", "P0")
    assert (page["annotations"]["status"], page["annotations"]["member_count"]) == ("escalated", "2")
    [detail] = am_alerts(alertmanager, errors["fingerprint"])
    assert detail["labels"]["llmpulse_kind"] == "alert"

    done = [member("a-slow", "latency_p95", "WARNING", t0, "resolved", t0 + 90_000),
            member("a-err", "error_rate", "CRITICAL", t0 + 40_000, "resolved", t0 + 100_000)]
    [resolved] = incidents.apply(done)
    assert resolved.status == "resolved"
    produce(kafka_bootstrap, topic, *done, resolved)
    forward(kafka_bootstrap, topic, group, "--alertmanager", alertmanager.url, "--max", "3")

    assert wait_until(lambda: am_alerts(alertmanager, incident_id=opened.incident_id) == [], 15, step=0.2), \
        "incident still active in Alertmanager"
    assert am_alerts(alertmanager, slow["fingerprint"]) == am_alerts(alertmanager, errors["fingerprint"]) == []


class Receiver(BaseHTTPRequestHandler):
    """Collects JSON bodies; answers 503 to the first ``failures`` requests."""

    bodies: list[Any]
    failures: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.failures[0] > 0:
            self.failures[0] -= 1
            self.send_response(503)
        else:
            self.bodies.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[Any]]]:
    bodies: list[Any] = []
    handler = type("Handler", (Receiver,), {"bodies": bodies, "failures": [1]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def test_webhook_gets_raw_records_with_their_kind_in_order_after_retrying_a_503(
    webhook: tuple[str, list[Any]], kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    url, bodies = webhook
    topic = topic_factory("alerts", 3)
    now = int(time.time() * 1000)
    records = [alert("firing", now, now), alert("resolved", now + 1_000, now)]
    [incident] = IncidentManager().apply(records[:1])  # CRITICAL: announced at once
    produce(kafka_bootstrap, topic, *records, incident)

    stats = forward(kafka_bootstrap, topic, f"forward-{uuid.uuid4().hex[:8]}", "--webhook", url,
                    "--from-beginning", "--max", "3")

    assert [b for b in bodies if b["kind"] == "alert"] == [{**r, "kind": "alert"} for r in records]
    assert [b for b in bodies if b["kind"] == "incident"] == [{**incident.to_record(), "kind": "incident"}]
    assert (stats["forwarded"], stats["retries"], stats["requests"]) == (3, 1, 3)
