"""Writer-schema announcements: how a worker without a schema registry learns the schema of a newer SDK.

An SDK writes, before its first record, one record per contract it writes to the compacted schemas topic
(``llm-schemas``): key ``<contract>:<fingerprint hex>``, value JSON ``{"contract": ..., "schema": <schema JSON>}``.
A worker meeting a fingerprint it does not know reads that topic up to its end and, when the schema is there,
reads the record by Avro schema resolution instead of refusing it as ``unknown_schema``. The fingerprint is
always computed from the announced schema itself, so an announcement cannot pass one schema off as another.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import fastavro

from llmpulse.schemas.single_object import fingerprint

MAX_ANNOUNCEMENT_BYTES = 256 * 1024


class Announcement(NamedTuple):
    contract: str  # llm_call_batch, llm_call, feedback, ...
    schema: dict[str, Any]  # the writer schema as JSON (what the .avsc file holds)

    def key(self) -> bytes:
        return f"{self.contract}:{fingerprint(fastavro.parse_schema(self.schema)).hex()}".encode()

    def value(self) -> bytes:
        return json.dumps({"contract": self.contract, "schema": self.schema}, separators=(",", ":")).encode()


class BadAnnouncement(ValueError):
    """A schemas-topic record that is not an announcement llmpulse can use (the reason says why)."""


def read_announcement(value: bytes | None) -> Announcement:
    """The announcement in a schemas-topic record value, or BadAnnouncement."""
    if not value:
        raise BadAnnouncement("empty record")
    if len(value) > MAX_ANNOUNCEMENT_BYTES:
        raise BadAnnouncement(f"{len(value)} bytes, more than {MAX_ANNOUNCEMENT_BYTES}")
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise BadAnnouncement(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("contract"), str) or not isinstance(
            body.get("schema"), dict):
        raise BadAnnouncement('expected {"contract": <name>, "schema": <Avro schema object>}')
    try:
        fastavro.parse_schema(body["schema"])
    except Exception as exc:  # fastavro raises several types on a bad schema; all mean the same here
        raise BadAnnouncement(f"not an Avro schema: {type(exc).__name__}: {exc}") from None
    return Announcement(body["contract"], body["schema"])
