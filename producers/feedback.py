"""Feedback on answered calls, SDK side: one score or label per call, sent on the calls topic keyed like the
call (by service), packed as columnar ``feedback`` batches (schemas/feedback.v1.avsc).

    with pulse.track(provider="openai", model="gpt-4o", prompt_version="v7") as call:
        ...
    pulse.feedback(call.request_id, thumbs=True)            # a user's thumbs up
    pulse.feedback(request_id, rating=4, source="user")     # 1-5 stars
    pulse.feedback(request_id, score=0.82, source="judge")  # an evaluator's score in 0..1
    pulse.feedback(request_id, correct=False, source="review")

``feedback_row`` never raises: a malformed call gets None (the Pulse counts it as dropped).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence
from typing import Any

from llmpulse.schemas import FEEDBACK
from llmpulse.schemas.single_object import SchemaCodec

MARK = "__feedback__"  # queued rows carrying it are feedback, not calls
KINDS = ("thumbs", "rating", "evaluator", "label")


def feedback_row(request_id: str, *, thumbs: bool | None = None, rating: float | None = None,
                 score: float | None = None, correct: bool | None = None, source: str = "user",
                 service: str | None = None, timestamp_ms: int | None = None) -> dict[str, Any] | None:
    """A queued feedback row, or None unless exactly one of thumbs / rating (1..5) / score (0..1) / correct
    is given, in range, for a non-empty request id."""
    try:
        given = [(kind, value) for kind, value in zip(KINDS, (thumbs, rating, score, correct), strict=True)
                 if value is not None]
        if len(given) != 1 or not isinstance(request_id, str) or not request_id:
            return None
        kind, raw = given[0]
        value = float(raw)
        low, high = (1.0, 5.0) if kind == "rating" else (0.0, 1.0)
        if not (math.isfinite(value) and low <= value <= high):
            return None
        return {MARK: True, "request_id": request_id, "kind": KINDS.index(kind), "value": value,
                "source": str(source or "user"), "service": service,
                "timestamp_ms": int(timestamp_ms if timestamp_ms is not None else time.time() * 1000)}
    except Exception:  # never raise into the caller
        return None


class FeedbackEncoder:
    """Rows (from ``feedback_row``) of one service -> one single-object-encoded ``feedback`` record."""

    def __init__(self, producer_id: str) -> None:
        self.producer_id = producer_id
        self.codec = SchemaCodec(FEEDBACK)

    def encode(self, service: str, rows: Sequence[dict[str, Any]]) -> bytes:
        sources = list(dict.fromkeys(row["source"] for row in rows))
        code = {name: i for i, name in enumerate(sources)}
        n = len(rows)
        return self.codec.encode({
            "producer_id": self.producer_id,
            "service": service,
            "count": n,
            "request_id": [row["request_id"] for row in rows],
            "timestamp_ms": struct.pack(f"<{n}q", *(row["timestamp_ms"] for row in rows)),
            "kind": bytes(row["kind"] for row in rows),
            "value": struct.pack(f"<{n}d", *(row["value"] for row in rows)),
            "source": {"values": sources, "codes": struct.pack(f"<{n}i", *(code[row["source"]] for row in rows))},
        })
