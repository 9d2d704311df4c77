"""Freeze one of two workers (SIGSTOP) past its consumer session while priced calls keep arriving, then let it
run again (SIGCONT): its partitions moved on while it was frozen, and what it does on waking (timers firing,
records buffered before the stop, the revoke's hand-over) must not write state over the partitions' new owner
(processors/session_fence.py). Every budget total stays exact, and no partition's persisted cursor ever goes
back on the changelog."""

from __future__ import annotations

import os
import signal
import time

import pytest

from llmpulse.processors.core.engine import CURSOR_KEY
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.topics import changelog_topics

pytestmark = pytest.mark.timeout(240)
PHASE_BATCHES, BATCH_SIZE = 40, 500  # 20k calls per phase, 60k in all
FROZEN_S = 15  # past the fast session timeout (8 s): the group expels the frozen worker
LOW_LIMITS = {"LLMPULSE_BUDGETS__SERVICE_DAY_USD": "15", "LLMPULSE_BUDGETS__USER_DAY_USD": "0.5"}


def test_budgets_stay_exact_when_a_worker_freezes_past_its_session_and_wakes(
    workers, priced_traffic, budgets, lag_of, waiter, topic_reader
) -> None:
    first = workers(fast_restart=True, **LOW_LIMITS)
    second = workers(app_id=first.app_id, fast_restart=True, **LOW_LIMITS)
    traffic = priced_traffic(first.topic("calls"), seed=29)

    traffic.trickle(PHASE_BATCHES, BATCH_SIZE)
    time.sleep(2)
    assert second.process is not None
    os.killpg(second.process.pid, signal.SIGSTOP)
    try:
        # the first worker takes the frozen one's partitions once its session expires
        traffic.trickle(PHASE_BATCHES, BATCH_SIZE)
        time.sleep(max(0.0, FROZEN_S - PHASE_BATCHES * 0.05))
    finally:
        os.killpg(second.process.pid, signal.SIGCONT)
    traffic.trickle(PHASE_BATCHES, BATCH_SIZE)

    expected = traffic.expected
    caught_up = waiter(lambda: lag_of(first) == 0 and budgets(first, second) == expected, timeout=120, step=1.0)
    spent = budgets(first, second)
    owners = [w.get("/api/budgets")[1] for w in (first, second)]
    print(f"calls={traffic.calls} partitions={[sorted(o['partitions']) for o in owners]}")
    assert caught_up, f"lag={lag_of(first)} global={spent['global']} expected={expected['global']}"
    assert spent == expected
    assert not set(owners[0]["partitions"]) & set(owners[1]["partitions"])
    # the woken worker says it stood still (reported every 5 s), and its doubt is over
    said = waiter(lambda: second.metric("llmpulse_worker_stalls_total") >= 1
                  and second.metric("llmpulse_worker_in_doubt") == 0, timeout=15, step=1.0)
    assert said, second.get("/metrics")[1]

    # the changelog in the order it was written: each partition's cursor only moves on (a woken worker that wrote
    # its stale state set partition 0's back from 29 to 12, and its next owner replayed from there)
    cursors: dict[int, list[int]] = {}
    for partition, key, value in topic_reader(changelog_topics(first.app_id)[0]):
        if key is not None and key.decode().endswith(f"|{CURSOR_KEY}") and value:
            offset = SourceCursor.from_bytes(value).next_offset
            cursors.setdefault(partition, []).append(-1 if offset is None else offset)
    assert cursors, "no cursor was persisted"
    assert all(seq == sorted(seq) for seq in cursors.values()), cursors
