"""Freeze one of two workers (SIGSTOP) past its consumer session while priced calls keep arriving, then let it
run again (SIGCONT): its partitions moved on while it was frozen, and what it does on waking (timers firing,
a group finishing) must not write state over the partitions' new owner. Every budget total stays exact."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = pytest.mark.timeout(240)
PHASE_BATCHES, BATCH_SIZE = 40, 500  # 20k calls per phase, 60k in all
FROZEN_S = 15  # past the fast session timeout (8 s): the group expels the frozen worker
LOW_LIMITS = {"LLMPULSE_BUDGETS__SERVICE_DAY_USD": "15", "LLMPULSE_BUDGETS__USER_DAY_USD": "0.5"}


def test_budgets_stay_exact_when_a_worker_freezes_past_its_session_and_wakes(
    workers, priced_traffic, budgets, lag_of, waiter
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
