"""``llmpulse alerts forward`` against a real Alertmanager and a local webhook, fed from a real alerts topic."""

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
from llmpulse.schemas.codec import SchemaCodec
from tests.ops.conftest import Server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.ops, pytest.mark.integration, pytest.mark.timeout(180)]
CODEC = SchemaCodec(schemas.ALERT)


def alert(status: str, updated_ms: int, started_ms: int, **fields: Any) -> dict[str, Any]:
    return {
        "alert_id": "inc-42", "fingerprint": "latency_p95|checkout|gpt-4o", "rule": "latency_p95",
        "severity": "CRITICAL", "priority": "P0", "status": status, "service": "checkout", "model": "gpt-4o",
        "provider": "openai", "summary": "p95 latency 6.1 s over 1m (threshold 5 s)", "observed": 6.1,
        "threshold": 5.0, "window": "1m", "started_at_ms": started_ms, "updated_at_ms": updated_ms,
        "mitigation": "fail over to the secondary provider", "acknowledged_by": None,
        "labels": {"team": "payments"}, **fields,
    }


def produce(bootstrap: str, topic: str, *records: dict[str, Any]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for record in records:
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


def am_alerts(server: Server, fingerprint: str) -> list[dict[str, Any]]:
    """Alertmanager's current (unresolved) alerts carrying our fingerprint label."""
    with urllib.request.urlopen(f"{server.url}/api/v2/alerts", timeout=5) as response:
        alerts = json.loads(response.read())
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
        "alertname": "latency_p95", "severity": "critical", "priority": "P0",
        "fingerprint": "latency_p95|checkout|gpt-4o", "service": "checkout", "model": "gpt-4o",
        "provider": "openai", "team": "payments",
    }
    assert active["annotations"]["summary"] == firing["summary"]
    assert active["annotations"]["mitigation"] == "fail over to the secondary provider"
    assert active["annotations"]["acknowledged_by"] == "oncall"
    assert (active["annotations"]["observed"], active["annotations"]["threshold"]) == ("6.1", "5")
    assert active["receivers"] == [{"name": "llmpulse-pager"}]  # critical routes to the pager

    resolved = alert("resolved", int(time.time() * 1000), now - 2_000)
    produce(kafka_bootstrap, topic, resolved)
    # Same group, no --from-beginning: resumes after the committed offset, sends only the new event.
    second = forward(kafka_bootstrap, topic, group, "--alertmanager", alertmanager.url, "--max", "1")

    assert (second["forwarded"], second["replayed"]) == (1, 3)
    assert wait_until(lambda: am_alerts(alertmanager, firing["fingerprint"]) == [], 15, step=0.2), "alert still active"


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


def test_webhook_gets_raw_records_in_order_after_retrying_a_503(
    webhook: tuple[str, list[Any]], kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    url, bodies = webhook
    topic = topic_factory("alerts", 3)
    now = int(time.time() * 1000)
    records = [alert("firing", now, now), alert("resolved", now + 1_000, now)]
    produce(kafka_bootstrap, topic, *records)

    stats = forward(kafka_bootstrap, topic, f"forward-{uuid.uuid4().hex[:8]}", "--webhook", url,
                    "--from-beginning", "--max", "2")

    assert bodies == records
    assert (stats["forwarded"], stats["retries"], stats["requests"]) == (2, 1, 2)
