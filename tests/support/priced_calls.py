"""Calls priced from a small fixed price table, decoded to columns as the worker decodes them."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.pricing import Pricer, parse_overrides
from llmpulse.processors.core.savings import DAY_MS
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder

DAY0 = 20_000 * DAY_MS  # a fixed UTC midnight
# $/1M tokens: big 10 in / 30 out, small 0.5 / 1.5 (20x cheaper), mid 2 / 6.
PRICES = {"big": {"input": 10, "output": 30}, "small": {"input": 0.5, "output": 1.5}, "mid": {"input": 2, "output": 6}}
PRICER = Pricer(overrides=parse_overrides(PRICES), use_catalogue=False)


def priced_calls(rows: list[dict[str, Any]]) -> tuple[CallColumns, np.ndarray]:
    """Columns and cost (micro-USD) of one call per row: a 100-in/50-out "big" call an hour into DAY0, with the
    row's fields over it."""
    full = []
    for i, row in enumerate(rows):
        call = {"event_id": f"e{i}", "timestamp_ms": DAY0 + 3_600_000, "service": "chat", "provider": "p",
                "request_model": "big", "status": "ok", "latency_ms": 100.0, "input_tokens": 100,
                "output_tokens": 50}
        call.update(row)
        full.append(call)
    now = max(call["timestamp_ms"] for call in full) + 1
    calls, refused = CallDecoder(Limits(max_age_s=10**9), 1 << 24, 10_000).decode(
        BatchEncoder("t").encode_batch(full), now)
    assert not refused and calls is not None
    cost = PRICER.fill_missing(calls.cost_micros, calls)
    return calls, cost
