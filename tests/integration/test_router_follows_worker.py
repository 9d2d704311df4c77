"""ProviderRouter following the provider state a real worker writes during the simulator's provider-outage
scenario: the SDK fails over to its next preference although its own calls to the failing model all succeeded,
because the fleet's circuit for that model is open. (The router against hand-written state records:
test_router.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from llmpulse.producers.router import ProviderRouter
from llmpulse.producers.simulation.scenarios import OUTAGE_MODEL
from llmpulse.producers.topic_follower import FollowerTiming
from tests.support.kafka import read_alert_records
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(120)
FAILING = ("anthropic", OUTAGE_MODEL)
FALLBACK = ("openai", "gpt-4o-mini")
FAST = FollowerTiming(poll=0.05, heartbeat=0.3, request_timeout=1.0, retry=0.2)
NO_BUDGET_ALERTS = {f"LLMPULSE_BUDGETS__GLOBAL_{period}_USD": "1000000" for period in ("HOUR", "DAY", "MONTH")}


def test_the_router_fails_over_when_the_worker_opens_the_fleet_circuit(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker = worker_factory(**NO_BUDGET_ALERTS)
    with ProviderRouter([FAILING, FALLBACK], bootstrap=worker.bootstrap, topic=worker.topic("provider_state"),
                        timing=FAST) as router:
        assert router.wait_ready(30)
        assert router.state(*FAILING) == ("CLOSED", "local") and router.choose() == FAILING
        # 60 s of traffic in event time; every call to the outage model fails from 20 s to the end
        sim = subprocess.run(
            [sys.executable, "-m", "llmpulse.cli", "simulate", "--fast", "--json", "--seed", "7", "--rate", "50",
             "--duration", "60", "--scenario", "provider-outage", "--scenario-start", "20",
             "--scenario-duration", "600"],
            env=worker.env, capture_output=True, text=True, timeout=90,
        )
        assert sim.returncode == 0, sim.stderr[-2000:]
        for _ in range(10):  # this instance's own calls to the model succeed: its local breaker stays closed
            router.record(*FAILING, ok=True)

        def failed_over() -> bool:
            return router.state(*FAILING) == ("OPEN", "fleet") and router.choose() == FALLBACK

        assert wait_until(failed_over, 45, step=0.1), (
            f"router saw {router.state(*FAILING)}; worker log:\n{worker.log_tail(20)}")
        assert router.state(*FALLBACK) == ("CLOSED", "local")  # the worker wrote nothing about the fallback
        stats = router.stats()  # the failover, counted once however often choose() answered since
        assert (stats.failovers, stats.failbacks, stats.current) == (1, 0, "/".join(FALLBACK))

    circuit = {"provider": FAILING[0], "model": FAILING[1]}
    assert wait_until(lambda: worker.metric("llmpulse_provider_circuit_state", **circuit) == 2, 15)  # 2: open
    alerts = read_alert_records(worker.bootstrap, worker.topic("alerts"), timeout=15,
                                until=lambda v: any(a["rule"] == "provider_circuit" for a in v))
    fired = [a for a in alerts if a["rule"] == "provider_circuit" and a["status"] == "firing"]
    assert [(a["provider"], a["model"]) for a in fired] == [FAILING]
