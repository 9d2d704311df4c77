"""Calls as the worker sees them: SDK rows encoded as one batch record and decoded, every row accepted."""

from __future__ import annotations

from typing import Any

from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder


def decoded(rows: list[dict[str, Any]], now_ms: int) -> CallColumns:
    """The rows through ``BatchEncoder`` and ``CallDecoder`` at ``now_ms``; fails the test if any is refused."""
    calls, refused = CallDecoder(Limits(), 1 << 24, 10_000).decode(BatchEncoder("test").encode_batch(rows), now_ms)
    assert not refused and calls is not None, refused
    return calls
