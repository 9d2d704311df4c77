"""Alert and incident records -> Alertmanager/webhook payloads, retries and dedup, without network or waiting."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from llmpulse.processors.alertmanager_mapping import alertmanager_alert, label_name, rfc3339, webhook_body
from llmpulse.processors.forwarding import (
    AlertForwarder,
    AlertmanagerTarget,
    DeliveryError,
    ForwardStats,
    HttpPoster,
    RejectedError,
    RetryPolicy,
    WebhookTarget,
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


def incident(status: str = "opened", updated: int = STARTED + 20_000, **fields: Any) -> dict[str, Any]:
    """An incident record as the forward command hands it over (decoded, with its kind)."""
    base = {
        "kind": "incident", "incident_id": "inc-7", "status": status, "paging": status != "updated",
        "scope": "series", "scope_key": "checkout/gpt-4o", "severity": "WARNING", "priority": "P2",
        "summary": "checkout/gpt-4o: latency p95 3.20 s", "rules": ["latency_p95"], "services": ["checkout"],
        "models": ["gpt-4o"], "providers": [],
        "members": [{"alert_id": "a-1", "rule": "latency_p95", "severity": "WARNING", "status": "firing",
                     "service": "checkout", "model": "gpt-4o", "provider": None, "summary": "p95 latency 3.2 s"}],
        "member_count": 1, "mitigation": "route to a faster model", "started_at_ms": STARTED,
        "updated_at_ms": updated, "resolved_at_ms": None, "acknowledged_by": None,
        "labels": {"family": "availability", "scope": "series", "scope_key": "checkout/gpt-4o"},
    }
    return {**base, **fields}


INCIDENT_LABELS = {"alertname": "llmpulse_incident", "llmpulse_kind": "incident", "incident_id": "inc-7",
                   "family": "availability", "severity": "warning", "priority": "P2"}


def poster(receiver: FakeReceiver, attempts: int = 4) -> tuple[HttpPoster, list[float]]:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=attempts, base_delay_s=0.5, multiplier=2.0, max_delay_s=1.5)
    return HttpPoster(policy, opener=receiver, sleep=sleeps.append, stats=ForwardStats()), sleeps


def test_firing_alert_is_active_with_identity_labels_and_details_in_annotations() -> None:
    alert = alertmanager_alert(record(labels={"team": "payments", "severity": "spoofed", "user.id": "u1"}))

    assert alert["labels"] == {
        "alertname": "latency_p95", "llmpulse_kind": "alert", "severity": "warning", "priority": "P2",
        "fingerprint": "fp-1", "service": "checkout", "model": "gpt-4o", "team": "payments", "user_id": "u1",
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


def test_webhook_gets_the_raw_record_with_its_kind() -> None:
    assert json.loads(webhook_body(record())) == {**record(), "kind": "alert"}
    assert json.loads(webhook_body(incident())) == incident()


def test_incident_is_one_alert_labelled_for_grouping_by_incident_id() -> None:
    alert = alertmanager_alert(incident())

    assert alert["labels"] == INCIDENT_LABELS
    notes = alert["annotations"]
    assert notes["summary"] == "checkout/gpt-4o: latency p95 3.20 s"
    assert (notes["scope"], notes["scope_key"], notes["member_count"]) == ("series", "checkout/gpt-4o", "1")
    assert (notes["rules"], notes["members"], notes["status"]) == ("latency_p95", "a-1", "opened")
    assert notes["mitigation"] == "route to a faster model"
    assert alert["startsAt"] == rfc3339(STARTED) and "endsAt" not in alert


def test_an_updated_or_acknowledged_incident_is_the_same_alert_even_when_its_scope_widens() -> None:
    widened = incident(
        "updated", updated=STARTED + 60_000, scope="service", scope_key="checkout", member_count=2,
        summary="service checkout: latency p95 3.20 s across 2 series",
        labels={"family": "availability", "scope": "service", "scope_key": "checkout"},
    )
    acked = incident("acknowledged", updated=STARTED + 90_000, acknowledged_by="oncall")
    opened = alertmanager_alert(incident())

    for later in (alertmanager_alert(widened), alertmanager_alert(acked)):
        assert later["labels"] == opened["labels"] and "endsAt" not in later
    assert alertmanager_alert(widened)["annotations"]["scope"] == "service"
    assert alertmanager_alert(acked)["annotations"]["acknowledged_by"] == "oncall"


def test_resolved_incident_ends_at_its_resolve_time() -> None:
    done = incident("resolved", updated=STARTED + 90_000, resolved_at_ms=STARTED + 90_000)
    assert alertmanager_alert(done)["endsAt"] == rfc3339(STARTED + 90_000)
    assert alertmanager_alert(done)["labels"] == INCIDENT_LABELS


def test_escalation_ends_the_old_label_set_in_the_same_request() -> None:
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    forwarder = AlertForwarder(AlertmanagerTarget("http://am", http), http.stats)
    worse = incident("escalated", updated=STARTED + 40_000, severity="CRITICAL", priority="P0")

    forwarder.forward([incident()])
    forwarder.forward([worse])
    forwarder.forward([incident("resolved", updated=STARTED + 90_000, severity="CRITICAL", priority="P0",
                                resolved_at_ms=STARTED + 90_000)])

    [opened], [old, new], [resolved] = receiver.bodies
    assert opened["labels"] == INCIDENT_LABELS
    assert old["labels"] == INCIDENT_LABELS and old["endsAt"] == rfc3339(STARTED + 40_000)
    assert new["labels"] == {**INCIDENT_LABELS, "severity": "critical", "priority": "P0"} and "endsAt" not in new
    assert resolved["labels"] == new["labels"] and resolved["endsAt"] == rfc3339(STARTED + 90_000)


def test_a_resolved_incident_reopening_pages_again_in_alertmanager_only_when_it_escalates() -> None:
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    now = [0.0]
    forwarder = AlertForwarder(AlertmanagerTarget("http://am", http), http.stats, resend_s=60, clock=lambda: now[0])
    forwarder.replay(incident("resolved", updated=STARTED + 90_000, resolved_at_ms=STARTED + 90_000))

    forwarder.forward([incident("updated", updated=STARTED + 100_000, paging=False, member_count=2)])
    now[0] = 61
    forwarder.resend_if_due()  # active here, yet not re-fired there
    assert receiver.bodies == [] and http.stats.resent == 1

    forwarder.forward([incident("escalated", updated=STARTED + 110_000, severity="ERROR", priority="P1")])
    [[reopened]] = receiver.bodies
    assert reopened["labels"]["severity"] == "error" and "endsAt" not in reopened


def test_an_escalation_after_a_restart_still_ends_the_label_set_an_earlier_run_posted() -> None:
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    forwarder = AlertForwarder(AlertmanagerTarget("http://am", http), http.stats)
    forwarder.replay(incident())  # delivered by the run before the restart

    forwarder.forward([incident("escalated", updated=STARTED + 40_000, severity="ERROR", priority="P1")])

    [[old, new]] = receiver.bodies
    assert old["labels"]["severity"] == "warning" and "endsAt" in old
    assert new["labels"]["severity"] == "error" and "endsAt" not in new


def test_member_alerts_are_detail_and_learn_their_incident_from_incident_records() -> None:
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    forwarder = AlertForwarder(AlertmanagerTarget("http://am", http), http.stats)

    forwarder.forward([record(), incident()])  # the member fires, then its incident opens
    forwarder.forward([record("acknowledged", updated=STARTED + 30_000, acknowledged_by="oncall")])
    forwarder.forward([record("resolved", updated=STARTED + 50_000)])

    [[member, opened], [acked], [resolved]] = receiver.bodies
    assert member["labels"]["llmpulse_kind"] == "alert" and "incident_id" not in member["annotations"]
    assert opened["labels"]["llmpulse_kind"] == "incident"
    # Learning its incident adds an annotation: the member stays the same Alertmanager alert to its end.
    assert acked["labels"] == resolved["labels"] == member["labels"] and "incident_id" not in member["labels"]
    assert acked["annotations"]["incident_id"] == "inc-7" and "endsAt" in resolved


def test_a_member_alert_escalating_ends_its_old_label_set() -> None:
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    forwarder = AlertForwarder(AlertmanagerTarget("http://am", http), http.stats)

    forwarder.forward([record(), record(updated=STARTED + 9_000, severity="CRITICAL", priority="P0")])

    [[warning, old, critical]] = receiver.bodies
    assert old["labels"] == warning["labels"] and old["endsAt"] == rfc3339(STARTED + 9_000)
    assert (critical["labels"]["severity"], critical["labels"]["fingerprint"]) == ("critical", "fp-1")


def test_incident_events_sharing_a_time_are_not_taken_for_duplicates() -> None:
    receiver = FakeReceiver()
    http, _ = poster(receiver)
    forwarder = AlertForwarder(WebhookTarget("http://hook", http), http.stats)
    joined = incident("updated", member_count=2)

    forwarder.forward([incident("updated"), joined, joined])

    assert [b["member_count"] for b in receiver.bodies] == [1, 2]
    assert (http.stats.forwarded, http.stats.duplicates) == (2, 1)


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

    forwarder.forward([incident()])
    now[0] = 80
    forwarder.resend_if_due()  # not due yet
    assert len(receiver.bodies) == 3

    forwarder.forward([record("resolved", updated=STARTED + 70_000)])
    now[0] = 122
    forwarder.resend_if_due()
    [old_member, active_incident] = receiver.bodies[-1]
    assert old_member["labels"]["fingerprint"] == "fp-old"
    assert active_incident["labels"] == INCIDENT_LABELS
    assert http.stats.resent == 4
