"""Time the caller spends inside ``Pulse.record`` per call, with the broker up and with it unreachable.

Calls are offered at a steady ``RATE`` (in bursts of ``BURST``), the SDK's background thread packing and
sending meanwhile, so the figures include the GIL hand-offs an application thread really sees.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from bench import dataset
from bench.common import GroupResult, Scale, percentile
from llmpulse.producers import Pulse

RATE = 2_000.0
BURST = 20


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def paced_times_us(call: Callable[..., Any], rows: list[dict[str, Any]]) -> list[float]:
    """Microseconds per ``call(**row)``, offered at ``RATE`` in bursts of ``BURST``."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    due = time.perf_counter()
    for start in range(0, len(rows), BURST):
        for row in rows[start : start + BURST]:
            began = clock()
            call(**row)
            samples.append((clock() - began) / 1000.0)
        due += BURST / RATE
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return samples


def record_times_us(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> tuple[list[float], int]:
    """Microseconds per ``Pulse.record`` call, and how many calls the SDK dropped."""
    logging.getLogger("llmpulse.sdk").setLevel(logging.CRITICAL)  # broker down: a reconnect line per attempt
    pulse = Pulse(bootstrap_servers=bootstrap, service="bench-sdk", topic=topic, shutdown_timeout_s=2.0)
    try:
        samples = paced_times_us(pulse.record, rows)
        dropped = pulse.stats().dropped_buffer_full
    finally:
        pulse.close(2.0)
    return samples, dropped


def _floor(**call: Any) -> bool:
    """The least a recorder can do: take the keyword arguments and keep them."""
    call.setdefault("timestamp_ms", 0)
    return True


def run(scale: Scale, bootstrap: str | None, tag: str) -> GroupResult:
    result = GroupResult()
    rows = dataset.realistic_rows(scale.sdk_calls, seed=3)
    for row in rows:  # what an application passes: the SDK fills ids and service itself
        row.pop("event_id", None)
        row.pop("service", None)
    note = f"{len(rows):,} calls offered at {RATE:,.0f}/s in bursts of {BURST}"
    if bootstrap is not None:
        up, _ = record_times_us(bootstrap, f"{tag}-sdk", rows)
        result.put("sdk_emit_p50_us", percentile(up, 0.5), note)
        result.put("sdk_emit_p99_us", percentile(up, 0.99), "broker up")
    else:
        result.put("sdk_emit_p50_us", None, "skipped: no broker")
        result.put("sdk_emit_p99_us", None, "skipped: no broker")
    down, dropped = record_times_us(closed_port(), f"{tag}-sdk", rows)
    result.put("sdk_emit_p99_us_broker_down", percentile(down, 0.99),
               f"bootstrap is a closed port; {dropped} calls dropped at the buffer bound")
    floor = paced_times_us(_floor, rows)
    result.put("sdk_emit_floor_p99_us", percentile(floor, 0.99),
               "a function that only takes the kwargs, same pacing: what the machine charges the first call "
               "after a sleep (cold caches) regardless of the SDK")
    warm = [t for i, t in enumerate(down) if i % BURST]
    result.put("sdk_emit_p99_us_warm", percentile(warm, 0.99), "broker down, calls after the first of each burst")
    return result
