"""ProviderRouter: fleet state from the provider-state topic on a real broker, local breakers without one."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from llmpulse import schemas
from llmpulse.circuit_breaker import BreakerConfig
from llmpulse.producers.router import NoHealthyProvider, ProviderRouter, RouterTiming
from llmpulse.schemas.codec import SchemaCodec

PREFERENCES = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini")]
FAST = RouterTiming(poll=0.05, heartbeat=0.3, request_timeout=1.0, retry=0.2)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once the socket is closed


def fail(router: ProviderRouter, provider: str, model: str, times: int) -> None:
    for _ in range(times):
        router.record(provider, model, ok=False)


def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_local_breaker_fails_over_after_five_failures_and_recovers() -> None:
    router = ProviderRouter(PREFERENCES, breaker_config=BreakerConfig(open_seconds=0.3))
    assert router.choose() == ("openai", "gpt-4o")
    fail(router, "openai", "gpt-4o", 4)
    assert router.choose() == ("openai", "gpt-4o")  # 4 failures: still closed
    fail(router, "openai", "gpt-4o", 1)
    assert router.choose() == ("anthropic", "claude-sonnet-4-5")
    assert router.state("openai", "gpt-4o") == ("OPEN", "local")
    time.sleep(0.35)
    assert router.choose() == ("openai", "gpt-4o")  # half-open: this choice is the trial call
    assert router.choose() == ("anthropic", "claude-sonnet-4-5")  # one trial at a time
    router.record("openai", "gpt-4o", ok=True)
    router.record("openai", "gpt-4o", ok=True)
    assert router.state("openai", "gpt-4o") == ("CLOSED", "local")
    assert router.choose() == ("openai", "gpt-4o")


def test_error_rate_opens_the_local_breaker() -> None:
    router = ProviderRouter(PREFERENCES[:2])
    for _ in range(5):  # alternate: never 5 in a row, but 50 % errors over 10 calls
        router.record("openai", "gpt-4o", ok=True)
        router.record("openai", "gpt-4o", ok=False)
    assert router.choose() == ("anthropic", "claude-sonnet-4-5")


def test_all_open_raises_naming_every_preference() -> None:
    router = ProviderRouter(PREFERENCES[:2])
    for provider, model in PREFERENCES[:2]:
        fail(router, provider, model, 5)
    with pytest.raises(NoHealthyProvider, match="openai/gpt-4o OPEN") as raised:
        router.choose()
    assert raised.value.states == {"openai/gpt-4o": "OPEN (local)", "anthropic/claude-sonnet-4-5": "OPEN (local)"}


def test_brokerless_router_uses_local_breakers_and_never_blocks() -> None:
    with ProviderRouter(PREFERENCES, bootstrap=closed_port(), timing=FAST) as router:
        time.sleep(0.5)  # let the follower thread try (and fail) to connect
        assert not router.reachable
        started = time.perf_counter()
        for _ in range(1_000):
            router.choose()
        per_choice = (time.perf_counter() - started) / 1_000
        assert per_choice < 0.001, f"choose() took {per_choice * 1e6:.0f} us"
        fail(router, "openai", "gpt-4o", 5)
        assert router.choose() == ("anthropic", "claude-sonnet-4-5")


def test_unknown_outcomes_and_empty_preferences() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ProviderRouter([])
    router = ProviderRouter(PREFERENCES[:1])
    fail(router, "mistral", "large", 10)  # not a preference: ignored
    assert router.choose() == ("openai", "gpt-4o")


# ---- against the real broker --------------------------------------------------------------------------------


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
