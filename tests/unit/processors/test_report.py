"""The usage report: period bounds, totals, rankings, budgets and alerts, against known answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from llmpulse.processors.core.ledger import BudgetLedger, BudgetLimits, PeriodLimits
from llmpulse.processors.core.savings import SavingsTracker, Usage, estimate_savings
from llmpulse.processors.report import build_report, period_bounds
from tests.support.priced_calls import PRICER, priced_calls


def _ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


NOW = _ms(2026, 3, 12, 15, 30)  # a Thursday


def test_periods_are_utc_calendar_periods_up_to_now() -> None:
    assert period_bounds("day", NOW) == (_ms(2026, 3, 12), NOW)
    assert period_bounds("week", NOW) == (_ms(2026, 3, 9), NOW)  # Monday
    assert period_bounds("month", NOW) == (_ms(2026, 3, 1), NOW)
    with pytest.raises(ValueError, match="day, week, month"):
        period_bounds("year", NOW)


def _usage() -> Usage:
    tracker = SavingsTracker()
    today, monday = NOW - 3_600_000, _ms(2026, 3, 9, 12)
    rows = (
        [{"timestamp_ms": today, "latency_ms": float(i + 1), "user_hash": "alice"} for i in range(100)]
        + [{"timestamp_ms": today, "request_model": "small", "status": "error", "user_hash": "bob"} for _ in range(10)]
        + [{"timestamp_ms": today, "service": "search", "request_model": "mid", "input_tokens": 4000}
           for _ in range(5)]
        + [{"timestamp_ms": monday} for _ in range(50)]  # this week, not today
    )
    tracker.update(*priced_calls(rows), offset=1)
    return tracker


def test_day_report_totals_rankings_and_latency() -> None:
    tracker = _usage()
    start, end = period_bounds("day", NOW)
    usage = Usage.collect([tracker], start, end + 1)
    report = build_report("day", NOW, usage, savings=estimate_savings(usage, PRICER.rate), partitions=[2, 0])

    totals = report["totals"]
    assert totals["requests"] == 115
    assert totals["errors"] == 10 and totals["error_ratio"] == pytest.approx(10 / 115)
    big, small, mid = 100 * 2500, 10 * 125, 5 * (4000 * 2 + 50 * 6)
    assert totals["cost_usd"] == pytest.approx((big + small + mid) / 1e6)
    assert [m["model"] for m in report["models"]] == ["big", "mid", "small"]  # by cost
    assert report["models"][0]["cost_share"] == pytest.approx(big / (big + small + mid))
    assert [s["service"] for s in report["services"]] == ["chat", "search"]
    assert report["users"][0] == {"service": "chat", "user": "alice", "cost_usd": pytest.approx(big / 1e6)}
    # Latency 1..100 ms on big plus 100 ms calls elsewhere: p50 of the chat/big row is ~50 ms.
    assert report["models"][0]["latency_ms"]["p50"] == pytest.approx(50, rel=0.02)
    assert report["partitions"] == [0, 2] and report["start"] == "2026-03-12T00:00:00+00:00"
    chat = next(s for s in report["savings"] if s["service"] == "chat")
    assert chat["target"] == "p/small" and chat["savings_usd"] == pytest.approx(100 * (2500 - 125) / 1e6)
    json.dumps(report)  # JSON-ready as served


def test_week_report_includes_earlier_days() -> None:
    tracker = _usage()
    start, end = period_bounds("week", NOW)
    report = build_report("week", NOW, Usage.collect([tracker], start, end + 1))
    assert report["totals"]["requests"] == 165


def test_budgets_and_projection_come_from_the_ledgers() -> None:
    limits = BudgetLimits(global_limits=PeriodLimits(day=1_000_000, month=10_000_000))
    ledger = BudgetLedger(limits)
    import numpy as np

    ledger.apply_batch(np.array([NOW]), np.array(["chat"], dtype=object), np.array([None], dtype=object),
                       np.array(["big"], dtype=object), np.array([900_000]))
    report = build_report("day", NOW, Usage(), budget_rows=ledger.snapshot(), projection=ledger.projection(NOW))
    (global_day,) = [b for b in report["budgets"] if b["scope"] == "global"]
    assert global_day == {"scope": "global", "key": "all", "period": "day", "spent_usd": 0.9, "limit_usd": 1.0,
                          "used_ratio": 0.9}
    assert all(b["period"] == "day" for b in report["budgets"])
    assert report["projection"]["spent_usd"] == 0.9 and report["projection"]["projected_usd"] > 0.9


def test_only_alerts_started_in_the_period_are_counted() -> None:
    def alert(rule: str, severity: str, started: int, status: str = "firing") -> dict:  # type: ignore[type-arg]
        return {"alert_id": f"{rule}-{started}", "rule": rule, "severity": severity, "status": status,
                "service": "chat", "model": "big", "summary": rule, "started_at_ms": started}

    alerts = [alert("token_average", "WARNING", NOW - 60_000), alert("budget", "CRITICAL", NOW - 120_000, "resolved"),
              alert("latency_p95", "WARNING", NOW - 2 * 86_400_000)]
    report = build_report("day", NOW, Usage(), alerts=alerts)["alerts"]
    assert report["fired"] == 2 and report["open"] == 1
    assert report["by_rule"] == {"token_average": 1, "budget": 1}
    assert [a["rule"] for a in report["recent"]] == ["token_average", "budget"]  # newest first
