"""``llmpulse report`` renders health, cost per 1,000 requests and KPIs, and still reads an older worker's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmpulse.commands.report import _print_rich, to_markdown
from llmpulse.processors.core.health import HealthConfig, ServiceSignals, health_score
from llmpulse.processors.core.kpis import Kpi
from llmpulse.processors.core.savings import DAY_MS, SavingsTracker, Usage
from llmpulse.processors.report import build_report
from tests.support.priced_calls import DAY0, priced_calls


def _report() -> dict[str, Any]:
    tracker = SavingsTracker()
    rows = [{"labels": {"outcome": "follow"} if i < 4 else {}} for i in range(20)]  # $0.0025 each, 4 follows
    tracker.update(*priced_calls(rows), offset=1)
    signals = ServiceSignals(requests=1000, failed=75, latency_count=1000, p95_s=3.0, p99_s=4.0, guard_flags=15)
    health = {"service": "chat", "window": "5m", **health_score(signals, HealthConfig()).as_dict(),
              "requests": 1000, "cost_usd": 2.5, "cost_per_1k_requests_usd": 2.5, "models": []}
    return build_report("day", DAY0 + 7_200_000, Usage.collect([tracker], DAY0, DAY0 + DAY_MS),
                        health=[health], kpis=[Kpi(name="cost_per_follow", outcome="follow")])


def test_markdown_has_health_kpis_and_cost_per_1k_requests() -> None:
    text = to_markdown(_report())
    assert "## Health now (score 0-100 over the last 5m; components 100% = within threshold)" in text
    assert "| chat | 50 | 50% | 50% | - | 50% | - | 1,000 | $2.50 |" in text  # drift and quality had no signal
    assert "| cost_per_follow | follow | $0.0500 | 4 | $0.0125 |" in text  # $0.05 spent, 4 follows
    assert "| chat | 20 | $0.0500 | $2.50 |" in text  # the services table's spend per 1,000 requests


def test_an_older_workers_report_without_them_still_renders(tmp_path: Path) -> None:
    data = _report()
    for key in ("health", "kpis"):
        del data[key]
    for row in (*data["services"], *data["models"]):
        del row["cost_per_1k_requests_usd"]
    assert "## Business KPIs (spend per outcome over the period)\n\n(none)" in to_markdown(data)
    _print_rich(data, tmp_path / "report.txt")
    assert "Health now" in (tmp_path / "report.txt").read_text()
