"""Fixtures for the client-instrumentation tests.

The real ``openai`` and ``anthropic`` libraries talk HTTP to a local fake API (no mocks of the clients);
what the wrappers record goes to a :class:`RecordingPulse` double, or to a real broker where a test says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from llmpulse.producers.simulation.fake_llm_api import FakeLLMApi
from tests.support.recording import RecordingPulse

FIRST_TOKEN_DELAY = 0.2  # seconds the fake waits before a stream's first content chunk
SLOW_SECONDS = 1.5  # how long a "slow" model takes; tests give the client a shorter timeout


@pytest.fixture(scope="session")
def fake_api() -> Iterator[FakeLLMApi]:
    with FakeLLMApi(slow_seconds=SLOW_SECONDS, first_token_delay=FIRST_TOKEN_DELAY) as api:
        yield api


@pytest.fixture
def recorder() -> RecordingPulse:
    return RecordingPulse()


COLUMNS = ("service", "provider", "model", "status", "error_type", "feature", "latency_ms", "ttft_ms",
           "input_tokens", "output_tokens", "cached_tokens")


def consume_calls(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Decode ``expected`` calls from ``topic`` with the processors' decoder: one dict of columns per call."""
    from confluent_kafka import Consumer

    from llmpulse.processors.core.validation import Limits
    from llmpulse.processors.wire.calls import CallDecoder

    decoder = CallDecoder(Limits(), max_record_bytes=1 << 20, max_calls_per_batch=10_000)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(rows) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            columns, refused = decoder.decode(message.value(), int(time.time() * 1000))
            assert not refused, refused
            rows.extend({name: getattr(columns, name)[i] for name in COLUMNS} for i in range(len(columns)))
    finally:
        consumer.close()
    assert len(rows) == expected, f"read {len(rows)} calls from {topic}, expected {expected}"
    return rows


@pytest.fixture
def capturing_recorder() -> RecordingPulse:
    """A recorder whose settings ask for prompt/response text."""
    return RecordingPulse(capture_text=True)


@pytest.fixture
def read_calls(kafka_bootstrap: str) -> Any:
    """``read_calls(topic, expected)``: the calls on ``topic``, decoded as the processors decode them."""
    return lambda topic, expected: consume_calls(kafka_bootstrap, topic, expected)
