"""The worker's clock and cadence, shared by the agents and the web layer (no faust, no state)."""

from __future__ import annotations

import time

TICK_SECONDS = 5.0  # how often the timer evaluates windows without new data and refreshes the gauges


def now_ms() -> int:
    return int(time.time() * 1000)
