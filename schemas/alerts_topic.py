"""The alerts topic carries two contracts side by side: alert records (one per member alert event) and
incident records (one per incident event, what on-call pages on). ``AlertsTopicCodec.decode`` tells them
apart by the writer fingerprint; a reader of alert records alone sees incident records as ``unknown_schema``
and skips them, so it keeps working unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from llmpulse import schemas
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

ALERT_KIND: Literal["alert"] = "alert"
INCIDENT_KIND: Literal["incident"] = "incident"


class AlertsTopicCodec:
    def __init__(self) -> None:
        self.alert = SchemaCodec(schemas.ALERT)
        self.incident = SchemaCodec(schemas.INCIDENT)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """("alert" | "incident", record); DecodeError when the bytes are neither."""
        if self.incident.knows(data):
            return INCIDENT_KIND, self.incident.decode(data)
        try:
            return ALERT_KIND, self.alert.decode(data)
        except DecodeError as exc:
            if exc.code == "unknown_schema":
                raise DecodeError("unknown_schema", "neither an alert nor an incident record: " + str(exc)) from None
            raise
