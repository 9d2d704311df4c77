"""Alert record -> Alertmanager/webhook payloads, retries and dedup, without network or waiting."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from llmpulse.processors.forwarding import (
    AlertForwarder,
    AlertmanagerTarget,
    DeliveryError,
    ForwardStats,
    HttpPoster,
    RejectedError,
    RetryPolicy,
    WebhookTarget,
    alertmanager_alert,
    label_name,
    rfc3339,
    webhook_body,
)

STARTED = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def record(status: str = "firing", updated: int = STARTED + 5_000, **fields: Any) -> dict[str, Any]:
    base = {
        "alert_id": "a-1", "fingerprint": "fp-1", "rule": "latency_p95", "severity": "WARNING", "priority": "P2",
        "status": status, "service": "checkout", "model": "gpt-4o", "provider": None,
        "summary": "p95 latency 3.2 s over 1m", "observed": 3.2, "threshold": 2.0, "window": "1m",
        "started_at_ms": STARTED, "updated_at_ms": updated, "mitigation": "route to a faster model",
        "acknowledged_by": None, "labels": {"team": "payments"},
    }
    return {**base, **fields}


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status

    def read(self) -> bytes:
        return b""

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FakeReceiver:
    """Answers each request with the next scripted outcome: an int status or an exception."""

    def __init__(self, *outcomes: int | Exception) -> None:
        self.outcomes = list(outcomes)
        self.bodies: list[Any] = []
        self.urls: list[str] = []

    def __call__(self, request: urllib.request.Request, timeout: float) -> FakeResponse:
        self.urls.append(request.full_url)
        self.bodies.append(json.loads(request.data))  # type: ignore[arg-type]
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if isinstance(outcome, Exception):
            raise outcome
        if outcome >= 400:
            raise urllib.error.HTTPError(request.full_url, outcome, "no", {}, io.BytesIO(b"bad alert"))  # type: ignore[arg-type]
        return FakeResponse(outcome)


def poster(receiver: FakeReceiver, attempts: int = 4) -> tuple[HttpPoster, list[float]]:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=attempts, initial_s=0.5, multiplier=2.0, max_s=1.5)
    return HttpPoster(policy, opener=receiver, sleep=sleeps.append, stats=ForwardStats()), sleeps


def test_firing_alert_is_active_with_identity_labels_and_details_in_annotations() -> None:
    alert = alertmanager_alert(record(labels={"team": "payments", "severity": "spoofed", "user.id": "u1"}))

    assert alert["labels"] == {
        "alertname": "latency_p95", "severity": "warning", "priority": "P2", "fingerprint": "fp-1",
        "service": "checkout", "model": "gpt-4o", "team": "payments", "user_id": "u1",
    }
    assert alert["annotations"]["summary"] == "p95 latency 3.2 s over 1m"
    assert alert["annotations"]["mitigation"] == "route to a faster model"
    assert (alert["annotations"]["observed"], alert["annotations"]["threshold"]) == ("3.2", "2")
    assert alert["annotations"]["window"] == "1m"
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert "endsAt" not in alert


def test_acknowledged_stays_active_with_the_same_labels_and_says_who() -> None:
    firing = alertmanager_alert(record())
    acked = alertmanager_alert(record("acknowledged", acknowledged_by="oncall"))
    assert acked["labels"] == firing["labels"]  # same Alertmanager alert, not a new one
    assert "endsAt" not in acked and acked["annotations"]["acknowledged_by"] == "oncall"


def test_resolved_alert_ends_at_its_update_time_never_before_it_started() -> None:
    assert alertmanager_alert(record("resolved"))["endsAt"] == "2023-11-14T22:13:25.000Z"
    assert alertmanager_alert(record("resolved", updated=STARTED - 1000))["endsAt"] == rfc3339(STARTED)


@pytest.mark.parametrize(("key", "name"), [("team", "team"), ("k8s.pod-name", "k8s_pod_name"), ("1x", "_1x")])
def test_label_names_are_made_valid_for_prometheus(key: str, name: str) -> None:
    assert label_name(key) == name


def test_webhook_gets_the_raw_record() -> None:
    assert json.loads(webhook_body(record())) == record()


def test_connection_errors_and_5xx_are_retried_with_capped_backoff() -> None:
    receiver = FakeReceiver(urllib.error.URLError("refused"), 503, 429, 200)
    http, sleeps = poster(receiver)

    assert http.post("http://am/api/v2/alerts", b"[]") == 200
    assert sleeps == [0.5, 1.0, 1.5]
    assert (http.stats.requests, http.stats.retries, http.stats.failed) == (1, 3, 0)


def test_a_receiver_down_for_every_attempt_raises_delivery_error() -> None:
    http, sleeps = poster(FakeReceiver(*[ConnectionRefusedError()] * 4))
    with pytest.raises(DeliveryError, match="failed 4 times"):
        http.post("http://am/api/v2/alerts", b"[]")
    assert len(sleeps) == 3 and http.stats.failed == 1


def test_a_4xx_is_not_retried() -> None:
    http, sleeps = poster(FakeReceiver(400))
    with pytest.raises(RejectedError, match="400: bad alert"):
        http.post("http://am/api/v2/alerts", b"[]")
    assert sleeps == []


def test_alertmanager_batch_with_one_bad_alert_still_delivers_the_others() -> None:
    receiver = FakeReceiver(400, 200, 400, 200)  # batch refused, then one by one: ok, refused, ok
    http, _ = poster(receiver)
    target = AlertmanagerTarget("http://am:9093/", http)
    stats = http.stats
    forwarder = AlertForwarder(target, stats)

    forwarder.forward([record(alert_id="a"), record(alert_id="b"), record(alert_id="c")])

    assert receiver.urls[0] == "http://am:9093/api/v2/alerts"
    assert [len(b) for b in receiver.bodies] == [3, 1, 1, 1]
    assert (stats.forwarded, stats.rejected) == (2, 1)


def test_duplicates_are_sent_once_and_failed_batches_can_be_offered_again() -> None:
    receiver = FakeReceiver(*[ConnectionRefusedError()] * 2)
    http, _ = poster(receiver, attempts=2)
    forwarder = AlertForwarder(WebhookTarget("http://hook", http), http.stats)
    events = [record(), record(), record("resolved", updated=STARTED + 9_000)]

    with pytest.raises(DeliveryError):
        forwarder.forward(events)
    forwarder.forward(events)  # the receiver is back: nothing of the failed batch was forgotten
    forwarder.forward([record()])  # re-emitted by a restarted worker

    delivered = receiver.bodies[2:]
    assert [(b["status"], b["updated_at_ms"]) for b in delivered] == [
        ("firing", STARTED + 5_000), ("resolved", STARTED + 9_000)]
    assert (http.stats.forwarded, http.stats.duplicates) == (2, 2)


def test_active_alerts_are_resent_until_resolved_and_replays_are_not_sent() -> None:
    now = [0.0]
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    forwarder = AlertForwarder(AlertmanagerTarget("http://am", http), http.stats, resend_s=60,
                               clock=lambda: now[0])
    forwarder.replay(record(alert_id="old", fingerprint="fp-old"))  # delivered by an earlier run
    forwarder.forward([record()])
    forwarder.forward([record()])  # duplicate of a delivered event
    assert len(receiver.bodies) == 1

    now[0] = 61
    forwarder.resend_if_due()
    assert sorted(a["labels"]["fingerprint"] for a in receiver.bodies[-1]) == ["fp-1", "fp-old"]

    forwarder.forward([record("resolved", updated=STARTED + 70_000)])
    now[0] = 122
    forwarder.resend_if_due()
    assert [a["labels"]["fingerprint"] for a in receiver.bodies[-1]] == ["fp-old"]
    assert http.stats.resent == 3
