"""promtool and amtool on the Prometheus rules, their unit tests, the Prometheus and Alertmanager configs and the
dashboard's queries. The same files are checked statically (no binary) in tests/unit/deploy/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    ALERTMANAGER,
    PROM_DIR,
    REPO,
    RULE_UNIT_TESTS,
    RULES,
    queries,
    rules_of,
    substitute,
)
from tests.support.tools import require_tool

PAGER, NOT_NOTIFIED = "llmpulse-pager", "llmpulse-null"


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    result = run([require_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    rules = rules_of()
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run([require_tool("promtool"), "test", "rules", *map(str, RULE_UNIT_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests are tight: raising the p95 threshold from 2 s to 5 s must make them fail."""
    shutil.copytree(PROM_DIR / "rules", tmp_path / "rules")
    shutil.copytree(PROM_DIR / "tests", tmp_path / "tests")
    rules = tmp_path / "rules" / "llmpulse.rules.yml"
    text = rules.read_text()
    loosened = text.replace(
        "llmpulse:llm_request_duration_seconds:p95_5m > 2\n",
        "llmpulse:llm_request_duration_seconds:p95_5m > 5\n",
    )
    assert loosened != text
    rules.write_text(loosened)
    result = run(
        [require_tool("promtool"), "test", "rules", *map(str, sorted((tmp_path / "tests").glob("*.yml")))]
    )
    assert result.returncode != 0
    assert "LLMLatencyP95High" in result.stdout + result.stderr


def test_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = run([require_tool("promtool"), "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(RULES.relative_to(PROM_DIR)) in result.stdout


def test_alertmanager_config_is_valid() -> None:
    result = run([require_tool("amtool"), "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr


def route(labels: list[str]) -> str:
    result = run(
        [require_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # Stream incidents (the forwarder): P0-P2 page, P3 goes to the digest.
        (["llmpulse_kind=incident", "incident_id=i-1", "severity=critical", "priority=P0"], PAGER),
        (["llmpulse_kind=incident", "incident_id=i-1", "severity=warning", "priority=P2"], PAGER),
        (["llmpulse_kind=incident", "incident_id=i-2", "severity=info", "priority=P3"], "llmpulse-digest"),
        # Stream member alerts are detail, whatever their severity.
        (["llmpulse_kind=alert", "alertname=latency_p99", "severity=critical", "priority=P0"], NOT_NOTIFIED),
        # Prometheus rules: traffic conditions are dashboards only; the workers' own health pages.
        (["llmpulse_kind=traffic", "severity=info", "family=latency"], NOT_NOTIFIED),
        (["llmpulse_kind=worker", "severity=critical", "family=worker"], PAGER),
        (["llmpulse_kind=worker", "severity=warning", "family=lag"], PAGER),
        (["llmpulse_kind=worker", "severity=info", "family=pricing"], "llmpulse-digest"),
        # No kind (a forwarder that predates incidents, another source): by severity, as before.
        (["severity=critical", "family=latency"], PAGER),
        (["severity=warning", "family=budget"], "llmpulse-webhook"),
        (["severity=info", "family=budget"], "llmpulse-digest"),
        (["alertname=SomethingElse"], "llmpulse-webhook"),
    ],
)
def test_alertmanager_routes_by_kind_and_severity(labels: list[str], receiver: str) -> None:
    assert route(labels) == receiver


def test_no_prometheus_traffic_rule_pages_and_every_worker_rule_does() -> None:
    """Each rule's static labels through the real routing tree: one paging path per condition."""
    for rule in (r for r in rules_of() if "alert" in r):
        labels = rule["labels"]
        got = route([f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in labels.items())])
        if labels["llmpulse_kind"] == "traffic":
            assert got == NOT_NOTIFIED, rule["alert"]
        else:
            assert got == (PAGER if labels["severity"] in {"critical", "warning"} else "llmpulse-digest"), rule["alert"]


def test_dashboard_queries_pass_promtool(tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule: the real Prometheus parser."""
    promtool = require_tool("promtool")
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": substitute(expr)}
        for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
