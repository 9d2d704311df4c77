"""ProviderRouter following a real provider-state topic: fleet state, live updates, tombstones, staleness.

The local breakers on their own (no broker) are tested in tests/unit/producers/test_router.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from llmpulse import schemas
from llmpulse.producers.router import ProviderRouter
from llmpulse.producers.topic_follower import FollowerTiming
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.waiting import wait_until

PREFERENCES = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini")]
FAST = FollowerTiming(poll=0.05, heartbeat=0.3, request_timeout=1.0, retry=0.2)


def fail(router: ProviderRouter, provider: str, model: str, times: int) -> None:
    for _ in range(times):
        router.record(provider, model, ok=False)


def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    assert wait_until(condition, timeout, step=0.02), "condition not met in time"


@pytest.fixture
def state_topic(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> Any:
    """(topic, publish(provider, model, state, updated_at_ms=now) / publish_raw(key, value))."""
    from confluent_kafka import Producer

    topic = topic_factory("provider-state", 1)
    codec = SchemaCodec(schemas.PROVIDER_STATE)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def publish_raw(key: bytes, value: bytes | None) -> None:
        producer.produce(topic, value, key=key)
        assert producer.flush(10) == 0

    def publish(provider: str, model: str, state: str, updated_at_ms: int | None = None) -> None:
        record = {"provider": provider, "model": model, "state": state, "reason": "test", "error_rate": 0.6,
                  "consecutive_failures": 5, "updated_at_ms": updated_at_ms or int(time.time() * 1000)}
        publish_raw(f"{provider}/{model}".encode(), codec.encode(record))

    publish.raw = publish_raw  # type: ignore[attr-defined]
    return topic, publish


def test_fleet_open_state_routes_to_the_second_preference(kafka_bootstrap: str, state_topic: Any) -> None:
    topic, publish = state_topic
    publish("openai", "gpt-4o", "CLOSED")
    publish("openai", "gpt-4o", "OPEN")  # the newest record per key wins
    publish.raw(b"garbage", b"not avro")  # unreadable records are skipped, not fatal
    with ProviderRouter(PREFERENCES, bootstrap=kafka_bootstrap, topic=topic, timing=FAST) as router:
        assert router.wait_ready(30)
        assert router.reachable
        assert router.state("openai", "gpt-4o") == ("OPEN", "fleet")
        assert router.state("anthropic", "claude-sonnet-4-5") == ("CLOSED", "local")  # no fleet state yet
        assert router.choose() == ("anthropic", "claude-sonnet-4-5")
        # Live updates: anthropic opens fleet-wide, openai comes back half-open (healthy enough to try).
        publish("anthropic", "claude-sonnet-4-5", "OPEN")
        eventually(lambda: router.state("anthropic", "claude-sonnet-4-5")[0] == "OPEN")
        assert router.choose() == ("openai", "gpt-4o-mini")
        publish("openai", "gpt-4o", "HALF_OPEN")
        eventually(lambda: router.choose() == ("openai", "gpt-4o"))


def test_fleet_state_outranks_local_failures_and_tombstones_hand_back(kafka_bootstrap: str,
                                                                       state_topic: Any) -> None:
    topic, publish = state_topic
    publish("openai", "gpt-4o", "CLOSED")
    with ProviderRouter(PREFERENCES, bootstrap=kafka_bootstrap, topic=topic, timing=FAST) as router:
        assert router.wait_ready(30)
        fail(router, "openai", "gpt-4o", 5)  # this instance saw failures, the fleet did not
        assert router.choose() == ("openai", "gpt-4o")
        publish.raw(b"openai/gpt-4o", None)  # the processors forgot the key: the local breaker decides again
        eventually(lambda: router.state("openai", "gpt-4o") == ("OPEN", "local"))
        assert router.choose() == ("anthropic", "claude-sonnet-4-5")


def test_stale_fleet_state_is_ignored(kafka_bootstrap: str, state_topic: Any) -> None:
    topic, publish = state_topic
    publish("openai", "gpt-4o", "OPEN", updated_at_ms=int(time.time() * 1000) - 3_600_000)
    with ProviderRouter(PREFERENCES, bootstrap=kafka_bootstrap, topic=topic, timing=FAST,
                        stale_after_s=600) as router:
        assert router.wait_ready(30)
        assert router.state("openai", "gpt-4o") == ("CLOSED", "local")
        assert router.choose() == ("openai", "gpt-4o")
