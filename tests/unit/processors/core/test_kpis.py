"""Business KPIs: outcomes counted from calls' labels exactly once, and spend per outcome over a period."""

from __future__ import annotations

import json
import struct

import pytest

from llmpulse.processors.core.kpis import Kpi, kpi_rows
from llmpulse.processors.core.savings import DAY_MS, OTHER_OUTCOMES, DayUsage, SavingsConfig, SavingsTracker, Usage
from llmpulse.processors.report import build_report
from tests.support import persisted
from tests.support.priced_calls import DAY0, priced_calls

FOLLOW = {"outcome": "follow"}


def _traffic() -> SavingsTracker:
    """chat: 20 big calls ($0.0025 each), 4 of them earned a follow; search: 10 small calls ($0.000125), 1 follow
    and 2 signups; a follow tomorrow."""
    rows = ([{"labels": FOLLOW if i < 4 else {}} for i in range(20)]
            + [{"service": "search", "request_model": "small", "labels": {"outcome": o} if o else {}}
               for o in ("follow", "signup", "signup", *[None] * 7)]
            + [{"timestamp_ms": DAY0 + DAY_MS + 1000, "labels": FOLLOW}])
    tracker = SavingsTracker()
    tracker.update(*priced_calls(rows), offset=1)
    return tracker


def _day(tracker: SavingsTracker) -> Usage:
    return Usage.collect([tracker], DAY0, DAY0 + DAY_MS)


def test_outcomes_are_counted_per_day_and_service_from_the_outcome_label() -> None:
    usage = _day(_traffic())
    assert usage.outcomes == {"chat": {"follow": 4}, "search": {"follow": 1, "signup": 2}}
    two_days = Usage.collect([_traffic()], DAY0, DAY0 + 2 * DAY_MS)
    assert two_days.outcomes["chat"] == {"follow": 5}


def test_cost_per_outcome_is_spend_over_outcomes() -> None:
    (follow,) = kpi_rows(_day(_traffic()), [Kpi(name="cost_per_follow", outcome="follow")])
    spend = (20 * 2500 + 10 * 125) / 1e6
    assert (follow["name"], follow["outcomes"]) == ("cost_per_follow", 5)
    assert follow["cost_usd"] == pytest.approx(spend)
    assert follow["cost_per_outcome_usd"] == pytest.approx(spend / 5)
    by_service = {row["service"]: row for row in follow["by_service"]}
    assert by_service["chat"]["cost_per_outcome_usd"] == pytest.approx(20 * 2500 / 1e6 / 4)
    assert by_service["search"]["cost_per_outcome_usd"] == pytest.approx(10 * 125 / 1e6 / 1)


def test_a_kpi_counts_only_its_services_and_is_unknown_without_outcomes() -> None:
    signup, nothing = kpi_rows(_day(_traffic()), [Kpi(name="cost_per_signup", outcome="signup", services=("search",)),
                                                  Kpi(name="cost_per_order", outcome="order")])
    assert signup["outcomes"] == 2 and signup["cost_per_outcome_usd"] == pytest.approx(10 * 125 / 1e6 / 2)
    assert [row["service"] for row in signup["by_service"]] == ["search"]
    assert nothing["outcomes"] == 0 and nothing["cost_per_outcome_usd"] is None  # unknown, not $0 or infinite
    assert nothing["cost_usd"] > 0
    assert kpi_rows(Usage(), [Kpi(name="k", outcome="follow")])[0]["cost_per_outcome_usd"] is None


def test_a_replayed_record_counts_no_outcome_twice_and_outcomes_survive_a_restore() -> None:
    calls, cost = priced_calls([{"labels": FOLLOW} for _ in range(3)])
    tracker = SavingsTracker()
    tracker.update(calls, cost, offset=5)
    tracker.update(calls, cost, offset=5)  # at-least-once redelivery
    restored = persisted.restored(SavingsTracker(), tracker.state.drain())
    assert _day(restored).outcomes == {"chat": {"follow": 3}}


def test_a_day_without_outcomes_keeps_the_earlier_format_and_one_with_them_round_trips() -> None:
    day = DayUsage()
    (size,) = struct.unpack_from("<I", day.to_bytes(), 0)
    assert "outcomes" not in json.loads(day.to_bytes()[4 : 4 + size])
    assert DayUsage.from_bytes(day.to_bytes()).outcomes == {}
    day.count_outcome("follow", max_outcomes=10)
    assert DayUsage.from_bytes(day.to_bytes()).outcomes == {"follow": 1}


def test_outcome_names_are_bounded_per_day_and_service() -> None:
    rows = [{"labels": {"outcome": f"o{i}"}} for i in range(5)]
    tracker = SavingsTracker(SavingsConfig(max_outcomes=3))
    tracker.update(*priced_calls(rows), offset=1)
    assert _day(tracker).outcomes["chat"] == {"o0": 1, "o1": 1, "o2": 1, OTHER_OUTCOMES: 2}


def test_the_report_carries_kpis_and_cost_per_1k_requests() -> None:
    follow = Kpi(name="cost_per_follow", outcome="follow")
    report = build_report("day", DAY0 + 7_200_000, _day(_traffic()), kpis=[follow])
    assert report["kpis"][0]["cost_per_outcome_usd"] == pytest.approx((20 * 2500 + 10 * 125) / 1e6 / 5)
    services = {row["service"]: row for row in report["services"]}
    assert services["chat"]["cost_per_1k_requests_usd"] == pytest.approx(2.5)  # $0.0025 a call
    assert services["search"]["cost_per_1k_requests_usd"] == pytest.approx(0.125)
    assert report["totals"]["cost_per_1k_requests_usd"] == pytest.approx((20 * 2500 + 10 * 125) / 1e6 / 30 * 1000)
    assert build_report("day", DAY0, Usage())["totals"]["cost_per_1k_requests_usd"] is None
