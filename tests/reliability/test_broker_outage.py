"""The broker goes away for 60 s under a steady 200 calls/s: the application never notices.

A broker of this test's own (never the shared one) is stopped and started again on the same port and data
directory. The SDK must not raise, must not slow the caller, must drop exactly what exceeds its buffer bound
(and count it), and must deliver everything within the bound exactly once after the broker returns.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse import schemas
from llmpulse.broker import BrokerConfig, LocalBroker
from llmpulse.producers import Pulse
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.waiting import free_port_pair

pytestmark = pytest.mark.timeout(240)
RATE_PER_S = 200
BUFFER_BOUND = 3000
BEFORE_S, OUTAGE_S, AFTER_S = 5.0, 60.0, 5.0
# How much worse the caller's p99 may get while the broker is down: a deque append, not a network wait.
P99_SLACK_MS = 1.0


@dataclass
class Emitter:
    """Calls ``pulse.record`` at a steady rate and times each call; the phase is set by the test."""

    pulse: Pulse
    phase: str = "before"
    stop: threading.Event = field(default_factory=threading.Event)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    attempts: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    exceptions: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        period, next_at = 1.0 / RATE_PER_S, time.perf_counter()
        while not self.stop.is_set():
            phase = self.phase
            t0 = time.perf_counter()
            try:
                kept = self.pulse.record(provider="openai", request_model="gpt-4o-mini", latency_ms=80.0,
                                         input_tokens=10, output_tokens=5, cost_micros=3)
            except BaseException as exc:  # the property under test: nothing may reach the caller
                self.exceptions.append(exc)
                kept = False
            self.latencies_ms.setdefault(phase, []).append((time.perf_counter() - t0) * 1000)
            self.attempts += 1
            if not kept:
                self.refused[phase] = self.refused.get(phase, 0) + 1
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _delivered_event_ids(bootstrap: str, topic: str) -> list[str]:
    from tests.support.kafka import read_topic

    codec = SchemaCodec(schemas.LLM_CALL_BATCH)
    batches = read_topic(bootstrap, topic, until=lambda _v: False, timeout=8, decode=codec.decode)
    return [event_id for batch in batches for event_id in batch["event_id"]]


def test_sdk_rides_out_a_60_second_broker_outage(tmp_path: Path) -> None:
    started = time.monotonic()
    broker = LocalBroker(BrokerConfig.from_env(port=free_port_pair(), data_dir=tmp_path / "broker"))
    bootstrap = broker.start().bootstrap
    pulse: Pulse | None = None
    try:
        topic = "outage-calls"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
        del admin  # its reconnect attempts during the outage would only add noise to the output
        pulse = Pulse(service="outage", bootstrap_servers=bootstrap, topic=topic, linger_ms=50,
                      max_buffered_calls=BUFFER_BOUND, shutdown_timeout_s=1.0)
        emitter = Emitter(pulse)
        thread = threading.Thread(target=emitter.run, daemon=True)
        thread.start()
        time.sleep(BEFORE_S)
        emitter.phase = "stopping"
        down_at = time.monotonic()
        broker.stop()
        # From here until the restart begins nothing can be delivered, so the buffer only fills.
        pending_at_outage = pulse.stats().pending
        emitter.phase = "outage"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        emitter.phase = "restarting"
        broker.start()
        outage_s = time.monotonic() - down_at
        emitter.phase = "after"
        time.sleep(AFTER_S)
        emitter.stop.set()
        thread.join(5)
        assert pulse.flush(60) == 0, pulse.stats()
        stats = pulse.stats()
        delivered = _delivered_event_ids(bootstrap, topic)
    finally:
        if pulse is not None:
            pulse.close(timeout=1.0)
        broker.stop()

    p99 = {phase: _p99(values) for phase, values in emitter.latencies_ms.items()}
    refused = sum(emitter.refused.values())
    print(f"pending_at_outage={pending_at_outage} attempts={emitter.attempts} recorded={stats.recorded} "
          f"dropped={stats.dropped_buffer_full} "
          f"refused_by_phase={emitter.refused} delivered={len(delivered)} outage={outage_s:.1f}s "
          f"p99_ms={ {k: round(v, 4) for k, v in p99.items()} } broker_errors={stats.broker_errors} "
          f"wall={time.monotonic() - started:.0f}s")
    assert emitter.exceptions == []
    assert p99["outage"] - p99["before"] < P99_SLACK_MS
    # The bound was exceeded, and only by calls made while the broker was down (or while it drained).
    assert stats.dropped_buffer_full > 0 and emitter.refused.get("before", 0) == 0
    assert stats.dropped_buffer_full == refused
    assert stats.recorded + stats.dropped_buffer_full == emitter.attempts
    # Exactly the calls made while the broker was down beyond the room the bound had left (+-2 for the
    # calls racing the phase switch).
    outage_calls = len(emitter.latencies_ms["outage"])
    room = BUFFER_BOUND - pending_at_outage
    assert abs(emitter.refused["outage"] - max(0, outage_calls - room)) <= 2
    assert stats.dropped_delivery_failed == 0 and stats.dropped_encoding == 0
    # Everything within the bound arrived, exactly once.
    assert stats.delivered == stats.recorded
    assert len(delivered) == stats.recorded
    assert len(set(delivered)) == len(delivered)
