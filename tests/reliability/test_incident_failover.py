"""SIGKILL the worker that owns the fleet stage while an incident is open: the survivor takes the stage over
from its changelog, and on-call sees one incident (one id, never a second one for the same cause) that still
resolves when the errors stop."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.support.worker import NO_GLOBAL_BUDGET

pytestmark = pytest.mark.timeout(300)
QUICK_RULES = {
    "LLMPULSE_ALERTS__RESOLVE_HOLD_S": "10",
    "LLMPULSE_TRAFFIC__WINDOW_S": "30",
    "LLMPULSE_LATENCY__ALERT_WINDOW_S": "30",
    **NO_GLOBAL_BUDGET,
}


def test_killing_the_fleet_owner_mid_incident_opens_no_second_incident_and_loses_no_resolve(
    workers, incidents_of, waiter
) -> None:
    first = workers(fast_restart=True, **QUICK_RULES)
    second = workers(app_id=first.app_id, fast_restart=True, **QUICK_RULES)
    # Real time: 40 s of baseline around a 35 s error burst on every service.
    sim = subprocess.Popen(
        [sys.executable, "-m", "llmpulse.cli", "simulate", "--rate", "60", "--duration", "100", "--seed", "5",
         "--scenario", "error-burst", "--scenario-start", "10", "--scenario-duration", "35"],
        env=first.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        opened = waiter(lambda: [r for r in incidents_of(first) if r["status"] == "opened"], timeout=120, step=1.0)
        assert opened, f"no incident opened; log:\n{first.log_tail(30)}"
        owner = next(w for w in (first, second) if w.get("/api/budgets")[1]["fleet"] is not None)
        survivor = second if owner is first else first
        owner.kill()  # mid-incident: members still firing, the resolve still to come
        owner.start(timeout=90)
        assert sim.wait(timeout=150) == 0, (sim.stderr.read() if sim.stderr else b"").decode(errors="replace")[-2000:]

        def resolved() -> list[dict[str, Any]]:
            return [r for r in incidents_of(survivor) if r["status"] == "resolved"]

        assert waiter(resolved, timeout=120, step=2.0), f"the incident never resolved:\n{survivor.log_tail(30)}"
    finally:
        sim.kill()
    records = incidents_of(survivor)
    paged = {r["incident_id"] for r in records if r["paging"] and r["status"] in ("opened", "escalated")}
    print(f"incident records={len(records)} ids={sorted({r['incident_id'] for r in records})} "
          f"statuses={[r['status'] for r in records]}")
    assert len(paged) == 1, f"one cause, {len(paged)} paged: {[(r['status'], r['summary']) for r in records]}"
    (incident_id,) = paged
    assert any(r["incident_id"] == incident_id and r["status"] == "resolved" for r in records)
    paging_opened = {r["incident_id"] for r in records if r["status"] == "opened" and r["priority"] != "P3"}
    assert paging_opened == {incident_id}, [(r["status"], r["priority"], r["summary"]) for r in records]
