"""Two workers of one app share the partitions; one leaves (SIGTERM) and comes back while priced calls keep
arriving. Partitions and the fleet stage move between them twice, and every budget total stays exact. State is
written at checkpoints (the agents' every 30 s, the timer's every 5 s), not after every group, so a partition
moves with up to 5 s of state absorbed since: handed over on revoke and at shutdown (ownership.py), or replayed
by its next owner if it were not."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(240)
PHASE_BATCHES, BATCH_SIZE = 40, 500  # 20k calls per phase, 60k in all
LOW_LIMITS = {"LLMPULSE_BUDGETS__SERVICE_DAY_USD": "15", "LLMPULSE_BUDGETS__USER_DAY_USD": "0.5",
              "LLMPULSE_STATE_CHECKPOINT_S": "30"}


def test_budgets_stay_exact_when_a_worker_leaves_and_rejoins(
    workers, priced_traffic, budgets, lag_of, alerts_of, firing_problems, waiter
) -> None:
    started = time.monotonic()
    first = workers(fast_restart=True, **LOW_LIMITS)
    second = workers(app_id=first.app_id, fast_restart=True, **LOW_LIMITS)
    traffic = priced_traffic(first.topic("calls"), seed=23)

    traffic.trickle(PHASE_BATCHES, BATCH_SIZE)
    time.sleep(2)
    second.stop()  # SIGTERM: a clean leave, its partitions and maybe the fleet stage move to the first
    traffic.trickle(PHASE_BATCHES, BATCH_SIZE)
    second.start(timeout=90)  # and move back
    traffic.trickle(PHASE_BATCHES, BATCH_SIZE)

    expected = traffic.expected
    caught_up = waiter(lambda: lag_of(first) == 0 and budgets(first, second) == expected, timeout=120, step=1.0)
    spent = budgets(first, second)
    owners = [w.get("/api/budgets")[1] for w in (first, second)]
    print(f"calls={traffic.calls} global={expected['global']['all']} "
          f"partitions={[sorted(o['partitions']) for o in owners]} "
          f"fleet_owner={[o['fleet'] is not None for o in owners]} "
          f"wall={time.monotonic() - started:.0f}s")
    assert caught_up, f"lag={lag_of(first)} global={spent['global']} expected={expected['global']}"
    assert spent == expected
    # Each partition ledger lives on exactly one worker, the fleet ledger too.
    assert not set(owners[0]["partitions"]) & set(owners[1]["partitions"])
    assert sum(o["fleet"] is not None for o in owners) == 1

    alerts = alerts_of(first)
    assert [a for a in alerts if a["rule"] == "budget" and a["status"] == "firing"]
    assert firing_problems(alerts) == []
