"""The alert-quality benchmark (bench/alerts.py) runs its quick variant (shortened) end to end and reports every
figure.

Goals are not asserted (the benchmark exists to show where they are missed); what is checked is that every kind
is scored, that the control day's false pages are counted, and that the figures are sane numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import alerts, report
from bench.alert_fleet import fleet_model, fleet_series
from bench.alert_schedule import EXPECTED_RULES, SCHEDULES, load
from llmpulse.producers.simulation.scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(1200)  # ~1 min on two idle cores; shared CI runners are slower


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    """The quick variant, shortened as a user can shorten it: an hour of control, the incidents 8 minutes apart,
    the drift figures from 4 series-days (2 shuffled) and 2 trials per shift."""
    return alerts.measure(quick=True, schedule=SCHEDULES / "smoke.jsonl", judged_control_s=3600.0,
                          drift_sizes=(4, 2, 2))


def test_every_key_of_the_issue_is_reported(quick: dict[str, Any]) -> None:
    for key in (*alerts.FIGURES, *alerts.DETAILS):
        assert key in quick, key
    for key in ("alert_recall_min", "pages_per_incident", "member_firings_per_incident", "false_pages_p0p1_per_day",
                "false_pages_p2_per_day", "resolve_delay_p95_s"):
        value = quick[key]
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, f"{key} = {value!r}"
    for key in ("drift_detect_windows_max", "drift_false_per_100_series_days"):  # bench/drift_quality.py's
        assert isinstance(quick[key], float) and math.isfinite(quick[key]), f"{key} = {quick[key]!r}"
        assert quick["notes"][key]
    json.dumps(quick)  # --json prints it as is


def test_recall_is_scored_for_every_scenario_kind(quick: dict[str, Any]) -> None:
    by_kind = quick["alert_recall_by_kind"]
    assert set(by_kind) == set(SCENARIOS) == set(EXPECTED_RULES)
    assert all(0.0 <= recall <= 1.0 for recall in by_kind.values())
    assert quick["alert_recall_min"] == min(by_kind.values())
    rows = quick["alert_quality_run"]["incidents"]
    assert len(rows) == len(SCENARIOS) and all(row["calls_touched"] > 0 for row in rows)


def test_control_day_pages_are_counted_by_priority(quick: dict[str, Any]) -> None:
    run = quick["alert_quality_run"]
    pages = run["control_pages"]
    per_day = 24.0 / (run["control_hours"] - alerts.WARMUP_S / 3600)
    p0p1 = sum(1 for page in pages if page["priority"] in ("P0", "P1"))
    p2 = sum(1 for page in pages if page["priority"] == "P2")
    assert quick["false_pages_p0p1_per_day"] == pytest.approx(p0p1 * per_day)
    assert quick["false_pages_p2_per_day"] == pytest.approx(p2 * per_day)
    assert sum(run["control_pages_by_rule"].values()) == len(pages)
    assert run["calls"]["control"] > 100_000 and run["calls"]["incident_day"] > 100_000


def test_the_report_shows_the_goals_and_the_kinds(quick: dict[str, Any]) -> None:
    figures = {key: quick[key] for key in alerts.FIGURES}
    table = report.markdown(figures, quick["notes"], {"mode": "quick"}, {k: quick[k] for k in alerts.DETAILS})
    assert "| `pages_per_incident` |" in table and "<= 1.2" in table
    assert "## Alert quality by kind" in table and "| budget-exhaustion |" in table


@pytest.mark.parametrize(("figures", "key", "expected"), [
    ({"alert_recall_min": 1.0}, "alert_recall_min", True),
    ({"alert_recall_min": 0.9}, "alert_recall_min", False),
    ({"false_pages_p0p1_per_day": 0.0}, "false_pages_p0p1_per_day", True),
    ({"false_pages_p0p1_per_day": 8.0}, "false_pages_p0p1_per_day", False),
    ({"pages_per_incident": 1.3}, "pages_per_incident", False),
    ({}, "detect_delay_p95_s", None),
])
def test_alert_goals_judge_known_values(figures: dict[str, float], key: str, expected: bool | None) -> None:
    assert report.verdicts(figures)[key] is expected


def test_a_schedule_names_its_bad_line(tmp_path: Path) -> None:
    series = fleet_series(fleet_model(), alerts.RATE)
    path = tmp_path / "s.jsonl"
    path.write_text('{"kind": "latency-spike", "scope": "model:gpt-4o", "start": "01:00", "duration": 60}\n'
                    '{"kind": "meteor-strike", "scope": "series", "start": 0, "duration": 60}\n')
    with pytest.raises(ValueError, match=r"s\.jsonl:2: unknown kind 'meteor-strike'"):
        load(path, series, np.random.default_rng(0))
    path.write_text('# targets left out are drawn by the seed\n'
                    '{"kind": "pii-leak", "scope": "provider", "start": "00:10:30", "duration": 60, "magnitude": 2}\n')
    (incident,) = load(path, series, np.random.default_rng(0))
    assert incident.start_s == 630.0 and incident.magnitude == 2.0 and incident.target in ("openai", "anthropic")


def test_a_cause_joining_an_incident_on_call_was_paged_for_is_detected_without_a_second_page() -> None:
    """A runaway's 100k-token calls are slow first: latency pages, then its budget burn joins that incident."""
    from bench.alert_fleet import Series
    from bench.alert_replay import Emitted, Log
    from bench.alert_schedule import Injected
    from bench.alert_scoring import judge
    from llmpulse.processors.core.alert_policy import AlertPolicy, Observation
    from llmpulse.processors.core.incidents import IncidentManager

    day0, series = 1_750_000_000_000, Series("docs-qa", "claude-3-5-sonnet-20241022", "anthropic", 1.0)
    runaway = Injected(0, "budget-exhaustion", "series", f"{series.service}/{series.model}", 600.0, 180.0)
    policy, incidents, log = AlertPolicy(), IncidentManager(), Log()
    where = (("model", series.model), ("service", series.service))
    for at_s, rule, severity, labels in ((605, "latency_p99", "CRITICAL", (*where, ("provider", series.provider))),
                                         (630, "budget_burn", "ERROR", (*where, ("key", "u1"), ("scope", "user")))):
        at = day0 + at_s * 1000
        alerts = policy.observe(Observation(rule, labels, severity, 1.0, 1.0, "1m", rule, at))
        log.members.extend((at, alert) for alert in alerts)
        log.incidents.extend(Emitted(at, e) for e in incidents.apply(a.to_record() for a in alerts))
    assert [e.is_page for e in log.incidents] == [True, False]  # one incident, one page

    [verdict] = judge(log, [runaway], [series], day0)
    assert verdict.detected and verdict.rules == ["budget_burn"] and verdict.window_pages == ["latency_p99"]
    assert (verdict.detected_at_ms - day0, verdict.paged_at_ms - day0) == (630_000, 630_000)
