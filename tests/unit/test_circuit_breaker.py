"""The circuit breaker the SDK and the stream share: the transitions a caller relies on, driven by a fake clock."""

from __future__ import annotations

import threading

import pytest

from llmpulse.circuit_breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    CircuitBreaker,
    Transition,
    TransitionCallback,
)
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_000.0)


def _opened(clock: FakeClock, on_transition: TransitionCallback | None = None) -> CircuitBreaker:
    """A breaker with the default config that five consecutive failures have just opened."""
    breaker = CircuitBreaker(clock=clock, on_transition=on_transition)
    for _ in range(5):
        breaker.record_failure()
    return breaker


def test_opens_after_five_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state == OPEN
    assert not breaker.allow()


def test_a_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    # 8 of 9 failed, but the window holds fewer than min_calls=10 outcomes and no run reached 5.
    assert breaker.state == CLOSED


def test_error_rate_opens_only_after_min_calls(clock: FakeClock) -> None:
    seen: list[Transition] = []
    breaker = CircuitBreaker(clock=clock, on_transition=seen.append)
    # Alternate fail/ok: never 2 failures in a row; error rate about 0.5 from the start.
    for i in range(9):
        (breaker.record_failure if i % 2 == 0 else breaker.record_success)()
    assert breaker.state == CLOSED  # 9 calls < min_calls
    breaker.record_success()  # 10 calls, 5 failures: the rate is judged when a failure arrives
    assert breaker.state == CLOSED
    breaker.record_failure()  # 11 calls, 6 failures: rate 0.545 >= 0.5
    assert breaker.state == OPEN
    assert seen[-1].reason == "error rate 0.55 over last 11 calls"
    assert seen[-1].error_rate == pytest.approx(6 / 11)


def test_error_rate_below_threshold_stays_closed(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    for i in range(200):  # one failure in three: rate 0.33
        (breaker.record_failure if i % 3 == 0 else breaker.record_success)()
    assert breaker.state == CLOSED
    assert breaker.snapshot()["error_rate"] == pytest.approx(7 / 20)


def test_half_open_after_open_seconds_then_two_successes_close(clock: FakeClock) -> None:
    seen: list[Transition] = []
    breaker = _opened(clock, on_transition=seen.append)
    clock.advance(29.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()  # trial permit
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one trial in flight
    breaker.record_success()
    assert breaker.state == HALF_OPEN
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED
    assert [(t.previous, t.state) for t in seen] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert seen[0].reason == "5 consecutive failures" and seen[0].consecutive_failures == 5
    assert seen[1].at == pytest.approx(1030.0)  # stamped at the logical moment, not when observed


def test_failure_in_half_open_reopens_for_a_full_period(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    clock.advance(1)
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_outcomes_while_open_are_ignored(clock: FakeClock) -> None:
    breaker = _opened(clock)
    breaker.record_success(100)
    breaker.record_failure()
    assert breaker.state == OPEN
    assert breaker.snapshot()["retry_in_seconds"] == pytest.approx(30.0)


def test_lost_trial_permit_expires(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(30)
    assert breaker.allow()  # the caller crashes and never reports
    assert not breaker.allow()
    clock.advance(30)
    assert breaker.allow()


def test_bulk_successes_close_and_then_fill_the_window(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(30)
    breaker.record_success(1000)
    snap = breaker.snapshot()
    assert snap["state"] == CLOSED
    assert snap["window_calls"] == 20 and snap["error_rate"] == 0.0


def test_closing_forgets_the_outage(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(30)
    breaker.record_success(2)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == CLOSED


def test_callback_errors_never_reach_the_caller(clock: FakeClock) -> None:
    def boom(_: Transition) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker(clock=clock, on_transition=boom)
    for _ in range(5):
        breaker.record_failure()
    assert breaker.state == OPEN


def test_export_and_restore_round_trip(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    for _ in range(3):
        breaker.record_failure()
    copy = CircuitBreaker(clock=clock)
    copy.restore_state(breaker.export_state())
    copy.record_failure()
    copy.record_failure()
    assert copy.state == OPEN


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(min_calls=30, window_size=20)
    with pytest.raises(ValueError):
        BreakerConfig(error_rate_threshold=0.0)


def test_concurrent_failures_open_exactly_once(clock: FakeClock) -> None:
    seen: list[Transition] = []
    breaker = CircuitBreaker(clock=clock, on_transition=seen.append)

    def hammer() -> None:
        for _ in range(500):
            breaker.record_failure()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [t.state for t in seen] == [OPEN]
