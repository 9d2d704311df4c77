"""Budget state for clients: what the fleet stage publishes, and when."""

from __future__ import annotations

import json

from llmpulse.processors.core.budget_state import record_key
from llmpulse.processors.core.fleet import FleetConfig, FleetEngine, FleetOutcome
from llmpulse.processors.core.ledger import BudgetLimits, PeriodLimits

NOW = 1_796_461_297_000  # mid-hour
HOUR = 3_600_000


def engine() -> FleetEngine:
    limits = BudgetLimits(global_limits=PeriodLimits(hour=1_000_000), user_limits=PeriodLimits(day=300_000),
                          burn_fraction=None)
    return FleetEngine(FleetConfig(limits=limits))


def spend(fleet: FleetEngine, offset: int, *rows: tuple[str, int]) -> FleetOutcome:
    summary = {"p": 0, "o": offset, "outcomes": [],
               "spend": [["gpt-4o", NOW, cost, "svc", user] for user, cost in rows]}
    return fleet.apply(json.dumps(summary).encode())


def states(records: list) -> dict[bytes, tuple[str, int]]:
    return {key: (record["state"], record["spent_micros"]) for key, record in records}


def test_the_global_heartbeat_is_published_before_any_spend() -> None:
    published = states(engine().budget_records(NOW, refresh=True))
    assert published[record_key("global", "hour", "all")] == ("ok", 0)
    assert set(published) == {record_key("global", p, "all") for p in ("hour", "day", "month")}


def test_a_change_of_state_leaves_at_once_and_new_spend_on_refresh() -> None:
    fleet = engine()
    fleet.budget_records(NOW, refresh=True)
    spend(fleet, 1, ("u1", 250_000), ("u2", 100_000))
    changed = states(fleet.budget_records(NOW, refresh=False))
    # u1 at 83 % of $0.30/day: warning; u2 first seen (ok); global at 35 %: unchanged, not sent
    assert changed == {record_key("user", "day", "u1"): ("warning", 250_000),
                       record_key("user", "day", "u2"): ("ok", 100_000)}
    spend(fleet, 2, ("u2", 10_000))
    assert fleet.budget_records(NOW, refresh=False) == []  # spend alone waits for the refresh
    refreshed = states(fleet.budget_records(NOW, refresh=True))
    assert refreshed[record_key("user", "day", "u2")] == ("ok", 110_000)
    assert record_key("user", "day", "u1") not in refreshed  # unchanged
    spend(fleet, 3, ("u1", 50_000), ("u2", 650_000))
    assert states(fleet.budget_records(NOW, refresh=False)) == {
        record_key("user", "day", "u1"): ("exhausted", 300_000),  # exactly the limit: exhausted
        record_key("user", "day", "u2"): ("exhausted", 760_000),
        record_key("global", "hour", "all"): ("exhausted", 1_060_000)}


def test_record_fields_bucket_and_projection() -> None:
    fleet = engine()
    spend(fleet, 1, ("u1", 100_000))
    record = dict(fleet.budget_records(NOW, refresh=True))[record_key("global", "hour", "all")]
    start = NOW - NOW % HOUR
    assert (record["bucket_start_ms"], record["bucket_end_ms"]) == (start, start + HOUR)
    assert record["limit_micros"] == 1_000_000 and record["updated_at_ms"] == NOW
    # 10 % spent after (NOW - start): exhaustion projected at start + 10 x elapsed, if within the hour
    eta = start + (NOW - start) * 10
    assert record["projected_exhaustion_ms"] == (eta if eta < start + HOUR else None)


def test_a_user_over_budget_across_partitions_alerts_once_from_the_fleet_on_the_series_it_spends_on() -> None:
    fleet = engine()
    assert spend(fleet, 1, ("u1", 200_000)).alerts == []  # 67 % of the day budget, via svc (partition 0)
    summary = {"p": 1, "o": 1, "outcomes": [], "spend": [["gpt-4o", NOW + 1_000, 150_000, "billing", "u1"]]}
    outcome = fleet.apply(json.dumps(summary).encode())  # 117 %: only the sum over both partitions says so
    assert fleet.ledger.spent("user", "u1", "day", NOW) == 350_000
    [alert] = outcome.alerts
    labels = alert.to_record()["labels"]
    assert (alert.rule, alert.severity, labels["scope"], labels["key"]) == ("budget", "CRITICAL", "user", "u1")
    assert (alert.service, alert.model) == ("billing", "gpt-4o")  # the call that crossed it: its incident's series
    outcome = spend(fleet, 2, ("u1", 700_000))  # the global hour budget crossed too: the fleet alerts, as before
    assert {(a.rule, a.to_record()["labels"]["scope"]) for a in outcome.alerts} == {("budget", "global")}


def test_a_replayed_summary_is_charged_once() -> None:
    fleet = engine()
    spend(fleet, 1, ("u1", 100_000))
    spend(fleet, 1, ("u1", 100_000))
    assert fleet.ledger.spent("user", "u1", "day", NOW) == 100_000
