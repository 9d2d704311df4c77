"""The alerts topic carries alert and incident records; readers of alerts alone keep working."""

from __future__ import annotations

import pytest

from llmpulse import schemas
from llmpulse.processors.core.incidents import IncidentManager
from llmpulse.schemas.alerts_topic import AlertsTopicCodec
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

ALERT = {
    "alert_id": "a1", "fingerprint": "f1", "rule": "error_rate", "severity": "CRITICAL", "priority": "P0",
    "status": "firing", "service": "chat", "model": "gpt-4o", "provider": "openai", "summary": "error rate 40%",
    "observed": 0.4, "threshold": 0.05, "window": "5m", "started_at_ms": 1, "updated_at_ms": 1,
    "mitigation": "fallback", "acknowledged_by": None, "labels": {"service": "chat"},
}


def test_alert_and_incident_records_are_told_apart_and_old_alert_readers_skip_incidents() -> None:
    incident = IncidentManager().apply([ALERT])[0]
    incident_bytes = SchemaCodec(schemas.INCIDENT).encode(incident.to_record())
    alert_bytes = SchemaCodec(schemas.ALERT).encode(ALERT)
    reader = AlertsTopicCodec()
    assert reader.decode(alert_bytes) == ("alert", ALERT)
    kind, record = reader.decode(incident_bytes)
    assert kind == "incident" and record["incident_id"] == incident.incident_id
    assert [m["alert_id"] for m in record["members"]] == ["a1"] and record["paging"] is True
    with pytest.raises(DecodeError) as refused:  # today's alert-only consumer: a clear skip, not a crash
        SchemaCodec(schemas.ALERT).decode(incident_bytes)
    assert refused.value.code == "unknown_schema"
    with pytest.raises(DecodeError):
        reader.decode(b"\xc3\x01" + b"\x00" * 8 + b"junk")
