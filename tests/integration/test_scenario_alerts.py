"""Every simulator scenario, end to end: simulator -> real broker -> real worker -> its alert fires exactly once
per incident and (where the condition can clear) resolves; on-call is paged once per scenario, by an incident.

Each scenario gets its own worker and topics; all run at once to keep the suite short. Traffic is sent with
--fast: 300 s of calls with event timestamps ending now, so windows, holds and cooldowns run on event time.
Windows and holds are shortened through the same LLMPULSE_ variables a user would set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from llmpulse.schemas.alerts_topic import AlertsTopicCodec
from tests.support.kafka import read_topic
from tests.support.worker import NO_GLOBAL_BUDGET, WorkerProcess

pytestmark = pytest.mark.timeout(300)
ALERTS_TOPIC = AlertsTopicCodec()
DURATION_S = 390  # confidence-drift: 90 s baseline, 120 s drift, then three minutes of clean drift blocks
QUIET = {
    "LLMPULSE_ALERTS__RESOLVE_HOLD_S": "15",
    "LLMPULSE_LATENCY__ALERT_WINDOW_S": "30",
    "LLMPULSE_TRAFFIC__WINDOW_S": "30",
    "LLMPULSE_DRIFT__REFERENCE_SIZE": "300",
    "LLMPULSE_DRIFT__BLOCK_SIZE": "150",
    "LLMPULSE_DRIFT__MIN_CURRENT": "100",
    "LLMPULSE_TRAFFIC__TOKEN_AVERAGE_LIMIT": "1000000",
    **NO_GLOBAL_BUDGET,
}
# scenario -> (rules that must fire, must they resolve?, extra worker settings)
EXPECTED: dict[str, tuple[tuple[str, ...], bool, dict[str, str]]] = {
    "latency-spike": (("latency_p95", "latency_p99"), True, {}),
    "error-burst": (("error_rate",), True, {}),
    "cost-spike": (("cost_per_request",), True, {}),
    # Spend never "un-happens": a budget incident ends with its period (or after an hour without news). The runaway
    # is one caller: a per-user budget sees it (its burn within seconds), and names the series it spends on.
    "budget-exhaustion": (("budget", "budget_burn"), False, {"LLMPULSE_BUDGETS__USER_HOUR_USD": "50"}),
    "confidence-drift": (("confidence_drift",), True, {}),
    # The per-user incident window is 10 min by default; the campaign must age out of it to resolve.
    "injection-campaign": (("prompt_injection", "security_incident"), True,
                           {"LLMPULSE_GUARDS__INCIDENT_WINDOW_S": "60"}),
    "hallucination": (("hallucination",), True, {}),
    "pii-leak": (("pii_leak",), True, {}),
    "provider-outage": (("provider_circuit",), True, {}),
    # Welch statistics are cumulative over the experiment: a regressed variant stays regressed.
    "ab-regression": (("ab_regression",), False, {}),
}


INCIDENT_START_MS: dict[str, int] = {}  # scenario -> event time its window opened (from the simulator)


@pytest.fixture(scope="module")
def runs(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, WorkerProcess]]:
    workers = {
        name: WorkerProcess(kafka_bootstrap, tmp_path_factory.mktemp(name), extra_env={**QUIET, **extra})
        for name, (_, _, extra) in EXPECTED.items()
    }
    try:
        _start_all(list(workers.values()))  # startups overlap
        sims = {
            name: subprocess.Popen(
                [sys.executable, "-m", "llmpulse.cli", "simulate", "--fast", "--json", "--seed", "7",
                 "--rate", "50", "--duration", str(DURATION_S), "--scenario", name],
                env=worker.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for name, worker in workers.items()
        }
        for name, sim in sims.items():
            output, errors = sim.communicate(timeout=180)
            assert sim.returncode == 0, f"simulate {name} failed:\n{errors.decode(errors='replace')[-2000:]}"
            summary = json.loads(output)
            INCIDENT_START_MS[name] = min(w["start_ms"] for w in summary["scenarios"])
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


def _start_all(workers: list[WorkerProcess], timeout: float = 120.0) -> None:
    import threading

    errors: list[BaseException] = []

    def start(worker: WorkerProcess) -> None:
        try:
            worker.start(timeout=timeout)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _alerts_until(worker: WorkerProcess, rules: tuple[str, ...], resolve: bool, timeout: float) -> list[dict[str, Any]]:
    def done(alerts: list[dict[str, Any]]) -> bool:
        incidents = _incidents(alerts, rules)
        if not all(any(rule == r for r, _ in incidents) for rule in rules):
            return False
        return not resolve or all("resolved" in statuses for statuses in incidents.values())

    deadline = time.monotonic() + timeout
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        alerts = [record for kind, record in _read_alerts_topic(worker) if kind == "alert"]
        if done(alerts):
            break
        time.sleep(2)
    return alerts


def _read_alerts_topic(worker: WorkerProcess) -> list[tuple[str, dict[str, Any]]]:
    return read_topic(worker.bootstrap, worker.topic("alerts"), until=lambda _v: False, timeout=2,
                      decode=ALERTS_TOPIC.decode)


def _incidents(alerts: list[dict[str, Any]], rules: tuple[str, ...]) -> dict[tuple[str, str], set[str]]:
    """(rule, alert_id) -> statuses seen."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for alert in alerts:
        if alert["rule"] in rules:
            out[(alert["rule"], alert["alert_id"])].add(alert["status"])
    return out


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_scenario_fires_its_alert_once_per_incident_and_resolves(runs: dict[str, WorkerProcess],
                                                                 scenario: str) -> None:
    worker = runs[scenario]
    rules, resolves, _ = EXPECTED[scenario]
    alerts = _alerts_until(worker, rules, resolves, timeout=90)
    incidents = _incidents(alerts, rules)
    fired = {rule for rule, _ in incidents}
    assert fired == set(rules), f"{scenario}: fired {fired}, log:\n{worker.log_tail(20)}"

    firing_ids: dict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        if alert["rule"] in rules and alert["status"] == "firing":
            firing_ids[alert["fingerprint"]].add(alert["alert_id"])
    assert all(len(ids) == 1 for ids in firing_ids.values()), f"{scenario}: an incident fired twice: {firing_ids}"
    if resolves:
        unresolved = [key for key, statuses in incidents.items() if "resolved" not in statuses]
        assert not unresolved, f"{scenario}: never resolved: {unresolved}"
    for alert in alerts:
        if alert["rule"] in rules:
            assert alert["mitigation"], alert
    first = min(a["started_at_ms"] for a in alerts if a["rule"] in rules and a["status"] == "firing")
    # Detection delay in event time (the run is --fast): shown with `pytest -s`, quoted in the issue notes.
    print(f"\n{scenario}: first alert {(first - INCIDENT_START_MS[scenario]) / 1000:.1f} s after the incident began")


# Rules that name the same cause: failing calls open the provider circuit, an outage raises the error rate.
SAME_CAUSE: dict[str, set[str]] = {"error-burst": {"provider_circuit"}, "provider-outage": {"error_rate"}}


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_scenario_pages_once_through_an_incident_that_names_its_cause(runs: dict[str, WorkerProcess],
                                                                     scenario: str) -> None:
    worker = runs[scenario]
    rules, resolves, _ = EXPECTED[scenario]
    deadline = time.monotonic() + 240  # an incident resolves after its last member: drift members clear last (a
    # loaded machine processes the --fast traffic minutes late)
    while True:
        incidents = [record for kind, record in _read_alerts_topic(worker) if kind == "incident"]
        pages = [r for r in incidents if r["paging"] and r["status"] in ("opened", "escalated")]
        # the incidents whose members name the cause, at any point (its first page may predate that member)
        named = set(rules) | SAME_CAUSE.get(scenario, set())
        causing = {r["incident_id"] for r in incidents if named & set(r["rules"])}
        cause = [r for r in pages if r["incident_id"] in causing]
        resolved = {r["incident_id"] for r in incidents if r["status"] == "resolved"}
        if (cause and (not resolves or {r["incident_id"] for r in cause} <= resolved)) or time.monotonic() > deadline:
            break
        time.sleep(2)
    shown = [(p["status"], p["priority"], p["summary"]) for p in pages]
    assert len({r["incident_id"] for r in cause}) == 1, f"{scenario}: not one incident for its cause: {shown}"
    opened = [r for r in cause if r["status"] == "opened"]
    assert len(opened) == 1, f"{scenario}: {shown}"
    # The one further page allowed is an escalation into the urgent tier (P2 -> P1/P0): it is worse now.
    escalations = [r for r in cause if r["status"] == "escalated"]
    assert len(escalations) <= 1 and all(r["priority"] in ("P0", "P1") for r in escalations), shown
    assert opened[0]["priority"] == "P2" or not escalations, shown
    others = [r for r in pages if r not in cause]
    assert not others, f"{scenario}: paged for something else: {shown}"
    page = opened[0]
    assert page["summary"] and page["mitigation"] and page["member_count"] >= 1
    if resolves:
        assert opened[0]["incident_id"] in resolved, f"{scenario}: incident never resolved"
    print(f"\n{scenario}: {len(pages)} page(s) [{', '.join(f'{s} {p}' for s, p, _ in shown)}]: "
          f"{page['scope']} {page['scope_key']!r}: {page['summary']}")
