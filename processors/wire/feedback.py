"""Feedback record bytes (schemas/feedback.v1.avsc) -> FeedbackColumns, with the refused part (never raises).

Feedback shares the calls topic (keyed by service, like the call it rates); the calls agent asks ``knows``
first and hands feedback here. Columns come off the wire with ``np.frombuffer`` and one fancy-index; events
whose value is out of range for their kind are dropped and reported as one dead letter.
"""

from __future__ import annotations

import numpy as np

from llmpulse.processors.core.feedback_join import KINDS, RATING, FeedbackColumns
from llmpulse.processors.wire.calls import Refused
from llmpulse.schemas import FEEDBACK
from llmpulse.schemas.single_object import DecodeError, SchemaCodec


class FeedbackDecoder:
    def __init__(self, max_events: int = 100_000) -> None:
        self.codec = SchemaCodec(FEEDBACK)
        self.max_events = max_events

    def knows(self, data: bytes) -> bool:
        return self.codec.knows(data)

    def decode(self, data: bytes) -> tuple[FeedbackColumns | None, list[Refused]]:
        try:
            record = self.codec.decode(data)
            feedback = self._columns(record)
        except DecodeError as exc:
            return None, [Refused(exc.code, str(exc), data)]
        kind, value = feedback.kind, feedback.value
        low = np.where(kind == RATING, 1.0, 0.0)
        high = np.where(kind == RATING, 5.0, 1.0)
        ok = (kind < len(KINDS)) & np.isfinite(value) & (value >= low) & (value <= high)
        ok &= feedback.request_id != ""
        if ok.all():
            return feedback, []
        bad = int((~ok).sum())
        refused = [Refused("invalid_field", f"{bad} feedback events with an unknown kind, an empty request id or "
                                            "a value out of range for their kind", data)]
        if not ok.any():
            return None, refused
        kept = FeedbackColumns(feedback.service, feedback.request_id[ok], feedback.timestamp_ms[ok], kind[ok],
                               value[ok], feedback.source[ok])
        return kept, refused

    def _columns(self, record: dict) -> FeedbackColumns:  # type: ignore[type-arg]
        n = record["count"]
        if not 0 < n <= self.max_events:
            raise DecodeError("invalid_batch", f"feedback count {n} not in 1..{self.max_events}")
        sizes = {"timestamp_ms": 8 * n, "kind": n, "value": 8 * n}
        for name, size in sizes.items():
            if len(record[name]) != size:
                raise DecodeError("invalid_batch", f"feedback column {name} holds {len(record[name])} bytes, "
                                                   f"expected {size}")
        codes = np.frombuffer(record["source"]["codes"], dtype="<i4")
        names = np.array(record["source"]["values"] + [""], dtype=object)
        bad_codes = codes.size != n or (n and (codes.min() < -1 or codes.max() >= len(names) - 1))
        if len(record["request_id"]) != n or bad_codes:
            raise DecodeError("invalid_batch", "feedback columns disagree in length or dictionary")
        ids = np.empty(n, dtype=object)
        ids[:] = record["request_id"]
        return FeedbackColumns(
            service=record["service"],
            request_id=ids,
            timestamp_ms=np.frombuffer(record["timestamp_ms"], dtype="<i8").astype(np.int64),
            kind=np.frombuffer(record["kind"], dtype=np.uint8),
            value=np.frombuffer(record["value"], dtype="<f8").astype(np.float64),
            source=names[codes],
        )
