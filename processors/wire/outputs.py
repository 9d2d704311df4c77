"""Avro records the worker writes: alerts, incidents, dead letters, commands. Codecs are parsed once per process."""

from __future__ import annotations

import time
import uuid

from llmpulse import schemas
from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.incidents import IncidentEvent
from llmpulse.processors.wire.calls import Refused
from llmpulse.schemas.single_object import SchemaCodec


class RecordCodecs:
    def __init__(self, dead_letter_payload_bytes: int) -> None:
        self.alert = SchemaCodec(schemas.ALERT)
        self.incident = SchemaCodec(schemas.INCIDENT)
        self.dead_letter = SchemaCodec(schemas.DEAD_LETTER)
        self.command = SchemaCodec(schemas.ALERT_COMMAND)
        self.provider_state = SchemaCodec(schemas.PROVIDER_STATE)
        self.budget_state = SchemaCodec(schemas.BUDGET_STATE)
        self.max_payload = dead_letter_payload_bytes

    def encode_alert(self, event: AlertEvent) -> bytes:
        return self.alert.encode(event.to_record())

    def encode_incident(self, event: IncidentEvent) -> bytes:
        return self.incident.encode(event.to_record())

    def encode_dead_letter(self, refused: Refused, topic: str, partition: int, offset: int) -> bytes:
        payload = refused.payload
        return self.dead_letter.encode(
            {
                "payload": payload[: self.max_payload],
                "payload_truncated": len(payload) > self.max_payload,
                "source_topic": topic,
                "source_partition": partition,
                "source_offset": offset,
                "batch_index": refused.batch_index,
                "reason_code": refused.code,
                "reason": refused.reason[:2000],
                "failed_at_ms": int(time.time() * 1000),
            }
        )

    def encode_command(self, alert_id: str, action: str, actor: str) -> bytes:
        return self.command.encode(
            {
                "command_id": uuid.uuid4().hex,
                "alert_id": alert_id,
                "action": action,
                "actor": actor,
                "issued_at_ms": int(time.time() * 1000),
            }
        )
