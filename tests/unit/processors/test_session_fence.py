"""SessionFence on a scripted clock: when a stall puts a worker in doubt, and what ends the doubt (what a worker
in doubt does is in test_engine_store.py)."""

from __future__ import annotations

import time

from llmpulse.processors.session_fence import SessionFence

SESSION_S = 8.0


class Scripted:
    """A clock and a consumer generation the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.generation = 3

    def clock(self) -> float:
        return self.now


def _run(fence: SessionFence, scripted: Scripted, seconds: float) -> None:
    """The process runs for ``seconds``: the thread notes the time every quarter second."""
    for _ in range(round(seconds / 0.25)):
        scripted.now += 0.25
        fence.note()


def _fence(scripted: Scripted) -> SessionFence:
    fence = SessionFence(SESSION_S, lambda: scripted.generation, clock=scripted.clock)
    fence.arm()
    return fence


def test_a_gap_of_more_than_half_the_session_puts_the_worker_in_doubt_until_the_group_assigns_again() -> None:
    scripted = Scripted()
    fence = _fence(scripted)
    for _ in range(40):  # running: noted every quarter second, 10 s in all
        scripted.now += 0.25
        assert not fence.in_doubt()
    scripted.now += 3.9  # a pause shorter than half the session: the heartbeats were never at risk
    assert not fence.in_doubt()
    scripted.now += 15.0  # SIGSTOP past the session; the first thing that runs after it asks
    assert fence.in_doubt() and fence.stalls == 1
    _run(fence, scripted, 1.0)
    assert fence.in_doubt()  # still: nothing said the worker is still a member
    scripted.generation += 1  # the group assigned partitions again (after revoking the old ones)
    assert not fence.in_doubt()


def test_without_a_new_assignment_the_doubt_ends_after_one_session() -> None:
    scripted = Scripted()
    fence = _fence(scripted)
    scripted.now += 5.0  # the whole process starved for 5 s: not expelled, but it cannot know
    fence.note()  # the thread sees it first this time
    assert fence.in_doubt()
    _run(fence, scripted, SESSION_S - 0.5)
    assert fence.in_doubt()
    _run(fence, scripted, 1.0)  # a session passed without a revoke: the heartbeats went on succeeding
    assert not fence.in_doubt() and fence.stalls == 1


def test_the_time_before_the_fence_is_armed_is_no_stall() -> None:
    scripted = Scripted()
    fence = SessionFence(SESSION_S, lambda: scripted.generation, clock=scripted.clock)
    scripted.now += 120.0  # waiting for Kafka before faust starts
    assert not fence.in_doubt()
    fence.arm()
    _run(fence, scripted, 1.0)
    assert not fence.in_doubt() and fence.stalls == 0


def test_the_fence_thread_notes_the_time_until_stopped() -> None:
    fence = SessionFence(SESSION_S, lambda: 0)
    fence.start()
    try:
        time.sleep(0.6)
        assert not fence.in_doubt() and fence.stalls == 0
    finally:
        fence.stop()
