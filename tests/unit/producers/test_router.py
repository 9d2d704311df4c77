"""ProviderRouter without a broker: local breakers on a fake clock, failover order, and an unreachable topic.

Fleet state read from a real provider-state topic is tested in tests/integration/test_router.py.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from llmpulse.circuit_breaker import BreakerConfig
from llmpulse.producers.router import NoHealthyProvider, ProviderRouter
from llmpulse.producers.topic_follower import FollowerTiming
from tests.support.clock import FakeClock

PREFERENCES = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini")]
# Short timeouts so the follower thread gives up on a closed port quickly.
OFFLINE = FollowerTiming(poll=0.05, heartbeat=0.3, request_timeout=0.2, retry=0.2)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once the socket is closed


def fail(router: ProviderRouter, provider: str, model: str, times: int) -> None:
    for _ in range(times):
        router.record(provider, model, ok=False)


class _FirstFailure(logging.Handler):
    """Set once the router's follower thread reports the provider-state topic unavailable."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "unavailable" in record.getMessage():
            self.seen.set()


@pytest.fixture
def first_failure() -> Iterator[threading.Event]:
    logger, handler = logging.getLogger("llmpulse.router"), _FirstFailure()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_local_breaker_fails_over_after_five_failures_and_recovers() -> None:
    clock = FakeClock()
    router = ProviderRouter(PREFERENCES, breaker_config=BreakerConfig(open_seconds=0.3), clock=clock)
    assert router.choose() == ("openai", "gpt-4o")
    fail(router, "openai", "gpt-4o", 4)
    assert router.choose() == ("openai", "gpt-4o")  # 4 failures: still closed
    fail(router, "openai", "gpt-4o", 1)
    assert router.choose() == ("anthropic", "claude-sonnet-4-5")
    assert router.state("openai", "gpt-4o") == ("OPEN", "local")
    clock.advance(0.2)
    assert router.choose() == ("anthropic", "claude-sonnet-4-5")  # still open
    clock.advance(0.15)
    assert router.choose() == ("openai", "gpt-4o")  # half-open: this choice is the trial call
    assert router.choose() == ("anthropic", "claude-sonnet-4-5")  # one trial at a time
    router.record("openai", "gpt-4o", ok=True)
    router.record("openai", "gpt-4o", ok=True)
    assert router.state("openai", "gpt-4o") == ("CLOSED", "local")
    assert router.choose() == ("openai", "gpt-4o")


def test_a_failover_is_logged_once_and_counted_and_so_is_the_way_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    router = ProviderRouter(PREFERENCES, breaker_config=BreakerConfig(open_seconds=0.3), clock=clock)
    caplog.set_level(logging.INFO, logger="llmpulse.router")
    assert router.choose() == ("openai", "gpt-4o")
    fail(router, "openai", "gpt-4o", 5)
    for _ in range(3):
        assert router.choose() == ("anthropic", "claude-sonnet-4-5")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["router failover openai/gpt-4o -> anthropic/claude-sonnet-4-5 (openai/gpt-4o OPEN (local))"]
    stats = router.stats()
    assert (stats.choices, stats.fallback_choices, stats.failovers, stats.failbacks) == (4, 3, 1, 0)
    assert stats.current == "anthropic/claude-sonnet-4-5"
    clock.advance(0.35)
    assert router.choose() == ("openai", "gpt-4o")  # the half-open trial
    assert router.stats().failbacks == 1 and router.stats().current == "openai/gpt-4o"
    assert any(r.getMessage() == "router failback anthropic/claude-sonnet-4-5 -> openai/gpt-4o" for r in caplog.records)


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


def test_unreachable_topic_leaves_the_local_breakers_in_charge(first_failure: threading.Event) -> None:
    with ProviderRouter(PREFERENCES, bootstrap=closed_port(), timing=OFFLINE) as router:
        assert router.choose() == ("openai", "gpt-4o")  # while the follower thread is still connecting
        assert first_failure.wait(30), "the follower thread never reported the closed port"
        assert not router.reachable
        for _ in range(1_000):
            assert router.choose() == ("openai", "gpt-4o")
        fail(router, "openai", "gpt-4o", 5)
        assert router.choose() == ("anthropic", "claude-sonnet-4-5")


def test_unknown_outcomes_and_empty_preferences() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ProviderRouter([])
    router = ProviderRouter(PREFERENCES[:1])
    fail(router, "mistral", "large", 10)  # not a preference: ignored
    assert router.choose() == ("openai", "gpt-4o")
