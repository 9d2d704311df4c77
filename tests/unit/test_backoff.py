"""The shared retry schedule (llmpulse/backoff.py); its users' own numbers are tested with them (the forwarder,
the example service)."""

from __future__ import annotations

import pytest

from llmpulse.backoff import Backoff


def test_the_schedule_doubles_up_to_the_cap_and_honours_retry_after_up_to_it() -> None:
    backoff = Backoff(max_attempts=5, base_delay_s=1.0, max_delay_s=5.0)
    assert [backoff.delay_s(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 5.0]
    assert (backoff.delay_s(1, retry_after_s=3.0), backoff.delay_s(1, retry_after_s=60.0)) == (3.0, 5.0)


def test_without_jitter_no_random_number_is_drawn() -> None:
    def never() -> float:
        raise AssertionError("drew a random number")

    assert Backoff(max_attempts=2, base_delay_s=0.5, max_delay_s=8.0).delay_s(2, rand=never) == 1.0


def test_a_policy_states_its_numbers() -> None:
    with pytest.raises(TypeError):
        Backoff(max_attempts=3)  # type: ignore[call-arg]  # no delays picked for it
    with pytest.raises(ValueError):
        Backoff(max_attempts=0, base_delay_s=0.5, max_delay_s=8.0)
