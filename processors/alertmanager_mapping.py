"""Alerts-topic records as Alertmanager v2 alerts: labels, annotations, and which events end which label set.

Alertmanager identifies an alert by its label set, so labels hold what identifies and routes an alert;
what changes from event to event goes in the annotations:

* Incident: labels ``alertname="llmpulse_incident"``, ``llmpulse_kind="incident"``, ``incident_id``,
  ``family`` (the cause family, fixed for the incident's life), ``severity`` (lower case) and ``priority``;
  annotations: status, summary, mitigation, scope, scope_key, member_count, rules, members (the listed
  members' alert ids), services, models, providers, acknowledged_by. deploy/alertmanager groups incidents by
  ``incident_id``, so Alertmanager's grouping is ours: one incident, one group.
* Member alert (detail; deploy/alertmanager routes it to a receiver that never notifies): labels
  ``alertname`` (the rule), ``llmpulse_kind="alert"``, severity, priority, fingerprint, service/model/provider
  when set, and the alert's own labels; annotations: summary, mitigation, observed, threshold, window,
  alert_id, status, acknowledged_by, and ``incident_id`` once an incident record listing the alert has been
  read. Not a label: an incident is announced after its group wait, so the member's first events never know
  it, and a label learnt later would make the member a new Alertmanager alert whose predecessor a restarted
  forwarder could not tell (it depends on the order records were read, not on the record).

Lifecycle: every event but ``resolved`` posts the alert active (``startsAt`` only); ``resolved`` adds
``endsAt`` (the resolve time), which resolves the same alert. ``updated`` and ``acknowledged`` keep the label
set and only refresh annotations. Scope and scope_key are annotations, not labels, because an incident widens
(series -> service -> fleet) on ``updated`` events, which must stay the same Alertmanager alert. Severity and
priority are labels because routing needs them (P3 goes to a digest, P0-P2 to the pager), and they change on
``escalated``, the one event that must notify again. So ``AlertmanagerTarget`` remembers the label set it
last posted for every live alert (per incident_id, per fingerprint) and, when an event's labels differ
(an escalation, of an incident or of a member alert), the same request ends the superseded set
(``endsAt`` = the event's time) before posting the new one: nothing stays firing under an old label set, and
in the incident's group the change reads as one alert replacing another. An incident that resolved and then
reopens with an event that does not page (``updated``: a flapping cause pages once) is not brought back to
life in Alertmanager, which would notify the pager again; an ``escalated`` reopen is. After a restart the
label sets (and which incidents Alertmanager holds resolved) are rebuilt from the events replayed before the
committed offset; should compaction have removed the one a set came from, that set is no longer re-posted
and Alertmanager resolves it after its ``resolve_timeout``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from llmpulse.schemas.alerts_topic import ALERT_KIND, INCIDENT_KIND

RESOLVED = "resolved"  # the one status, of either kind, that ends an alert
INCIDENT_ALERTNAME = "llmpulse_incident"
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
# Labels the record's own fields define; a same-named entry in the record's free-form labels must not win.
_CORE_LABELS = ("alertname", "llmpulse_kind", "incident_id", "severity", "priority", "fingerprint", "service",
                "model", "provider")

DedupKey = tuple[str, str, str, int, str]


def rfc3339(ms: int) -> str:
    """Unix milliseconds as the RFC 3339 UTC timestamp Alertmanager parses."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def label_name(key: str) -> str:
    """A Prometheus-valid label name: other characters become ``_``, a leading digit gets a ``_`` prefix."""
    name = _INVALID_LABEL_CHARS.sub("_", key) or "_"
    return f"_{name}" if name[0].isdigit() else name


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def record_kind(record: Mapping[str, Any]) -> str:
    """"alert" or "incident": the record's ``kind`` key, else told by its fields."""
    kind = record.get("kind")
    if kind in (ALERT_KIND, INCIDENT_KIND):
        return str(kind)
    return INCIDENT_KIND if "incident_id" in record and "alert_id" not in record else ALERT_KIND


def record_id(record: Mapping[str, Any]) -> str:
    """The incident_id of an incident, the alert_id of an alert."""
    return str(record["incident_id"] if record_kind(record) == INCIDENT_KIND else record["alert_id"])


def identity(record: Mapping[str, Any]) -> str:
    """What stays one Alertmanager alert over a lifecycle: an incident's id, an alert's fingerprint."""
    if record_kind(record) == INCIDENT_KIND:
        return f"incident/{record['incident_id']}"
    return f"alert/{record['fingerprint']}"


def is_active(record: Mapping[str, Any]) -> bool:
    return record["status"] != RESOLVED


def alertmanager_alert(record: Mapping[str, Any], generator_url: str | None = None,
                       incident_id: str | None = None) -> dict[str, Any]:
    """One record of the alerts topic as a postable Alertmanager v2 alert (mapping: module docstring).

    ``incident_id``: the incident a member alert belongs to, when known (an annotation; ignored for incidents).
    """
    if record_kind(record) == INCIDENT_KIND:
        labels, annotations = _incident_fields(record)
        ends_ms = record.get("resolved_at_ms") or record["updated_at_ms"]
    else:
        labels, annotations = _member_fields(record, incident_id)
        ends_ms = record["updated_at_ms"]
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(record["started_at_ms"]),
    }
    if not is_active(record):
        # Alertmanager refuses endsAt before startsAt; a resolve stamped earlier still has to resolve.
        alert["endsAt"] = rfc3339(max(ends_ms, record["started_at_ms"]))
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


def _member_fields(record: Mapping[str, Any], incident_id: str | None) -> tuple[dict[str, str], dict[str, str]]:
    labels = {label_name(k): str(v) for k, v in (record.get("labels") or {}).items() if v not in (None, "")}
    for key in _CORE_LABELS:
        labels.pop(key, None)
    labels.update(
        alertname=record["rule"],
        llmpulse_kind=ALERT_KIND,
        severity=record["severity"].lower(),
        priority=record["priority"],
        fingerprint=record["fingerprint"],
    )
    for key in ("service", "model", "provider"):
        if record.get(key):
            labels[key] = record[key]
    annotations = {
        "summary": record["summary"],
        "mitigation": record.get("mitigation") or "",
        "observed": _format_number(record["observed"]),
        "threshold": _format_number(record["threshold"]),
        "window": record["window"],
        "alert_id": record["alert_id"],
        "status": record["status"],
        "acknowledged_by": record.get("acknowledged_by") or "",
        "incident_id": incident_id or "",
    }
    return labels, annotations


def _incident_fields(record: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    labels = {
        "alertname": INCIDENT_ALERTNAME,
        "llmpulse_kind": INCIDENT_KIND,
        "incident_id": record["incident_id"],
        "severity": record["severity"].lower(),
        "priority": record["priority"],
    }
    family = (record.get("labels") or {}).get("family")
    if family:
        labels["family"] = family
    annotations = {
        "status": record["status"],
        "summary": record["summary"],
        "mitigation": record.get("mitigation") or "",
        "scope": record["scope"],
        "scope_key": record["scope_key"],
        "member_count": str(record["member_count"]),
        "rules": ", ".join(record.get("rules") or ()),
        "members": ", ".join(m["alert_id"] for m in record.get("members") or ()),
        "services": ", ".join(record.get("services") or ()),
        "models": ", ".join(record.get("models") or ()),
        "providers": ", ".join(record.get("providers") or ()),
        "acknowledged_by": record.get("acknowledged_by") or "",
    }
    return labels, annotations


def ended(alert: Mapping[str, Any], at_ms: int) -> dict[str, Any]:
    """``alert`` (as posted earlier) resolved at ``at_ms``, never before it started."""
    # rfc3339() has a fixed width, so its strings order like the instants they name.
    return {**alert, "endsAt": max(rfc3339(at_ms), str(alert["startsAt"]))}


def webhook_body(record: Mapping[str, Any]) -> bytes:
    """The raw record as JSON (field names and values exactly as in its Avro contract) plus its ``kind``."""
    return json.dumps({**record, "kind": record_kind(record)}, separators=(",", ":"), sort_keys=True).encode()


def dedup_key(record: Mapping[str, Any]) -> DedupKey:
    """The same lifecycle event re-emitted (worker restart, rebalance) has the same key.

    An alert event is (alert_id, status, updated_at_ms). Two different ``updated`` events of an incident can
    share its updated_at_ms (a member's older news changes the members but not the time), so an incident
    event's key adds a digest of its whole record.
    """
    kind = record_kind(record)
    content = hashlib.blake2b(webhook_body(record), digest_size=8).hexdigest() if kind == INCIDENT_KIND else ""
    return kind, record_id(record), str(record["status"]), int(record["updated_at_ms"]), content
