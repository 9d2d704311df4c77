"""Prometheus rules and Alertmanager config: structure (always) and promtool/amtool checks (marker ``ops``).

The binaries come from scripts/install-ops-tools.sh; they are looked up on PATH, then in
~/.cache/llmpulse/tools/bin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmpulse.processors.core.mitigations import MITIGATIONS

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
RULES = PROM_DIR / "rules" / "llmpulse.rules.yml"
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
CATALOGUE = REPO / "docs" / "metrics.md"

# The alerts the operations issue asks for, by the condition they watch.
REQUIRED_ALERTS = {
    "LLMLatencyP95High",
    "LLMLatencyP99Critical",
    "LLMErrorRateHigh",
    "LLMErrorRateCritical",
    "LLMCostPerRequestHigh",
    "LLMBudget80PercentUsed",
    "LLMBudget90PercentUsed",
    "LLMBudgetExhausted",
    "LLMConfidenceDriftWarning",
    "LLMConfidenceDriftCritical",
    "LLMDistributionDrift",
    "LLMPromptInjectionAttempts",
    "LLMHallucinationFlagsHigh",
    "LLMSecurityIncident",
    "LLMProviderCircuitOpen",
    "LLMNoAnswerRateHigh",
    "LLMPulseWorkerDown",
    "LLMPulseDeadLetterGrowing",
    "LLMPulseConsumerLagHigh",
}
# One paging path per condition (docs/runbook.md, "Who pages"): Prometheus pages only on the workers' own
# health, read from these metrics (and up{job="llmpulse-worker"}); LLM-traffic rules are dashboards only.
WORKER_HEALTH_METRICS = {
    "llmpulse_worker_ready",
    "llmpulse_consumer_lag_records",
    "llmpulse_events_processed_total",
    "llmpulse_batches_processed_total",
    "llmpulse_dead_letter_total",
    "llmpulse_source_rewinds_total",
    "llmpulse_unpriced_calls_total",
    "llmpulse_metric_series_folded_total",
}
KINDS = {"worker", "traffic"}
PAGER, NOT_NOTIFIED = "llmpulse-pager", "llmpulse-null"
METRIC_RE = re.compile(r"\b(llmpulse(?:_[a-z0-9_]+|:[a-z0-9_:]+))")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def find_tool(name: str) -> str | None:
    """PATH first, then the install script's cache."""
    found = shutil.which(name)
    if found:
        return found
    tools = Path(os.environ.get("LLMPULSE_TOOLS_DIR", Path.home() / ".cache" / "llmpulse" / "tools"))
    candidate = tools / "bin" / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} not installed: run scripts/install-ops-tools.sh")
    return path


def rules_of(path: Path = RULES) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def catalogue_names() -> set[str]:
    """Metric names from the tables of docs/metrics.md (first column, in backticks)."""
    return set(re.findall(r"^\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \|", CATALOGUE.read_text(), flags=re.M))


def metric_names(expr: str) -> set[str]:
    """llmpulse metric names an expression reads, histogram series folded onto their family."""
    names = set()
    for name in METRIC_RE.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and not name.endswith("_total"):
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def unit_test_cases() -> list[dict[str, Any]]:
    cases = []
    for path in UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(group.get("alert_rule_test", []))
    return cases


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# ---- structure, no binaries needed


def test_rule_counts_and_unique_names() -> None:
    rules = rules_of()
    records = [r["record"] for r in rules if "record" in r]
    alerts = [r["alert"] for r in rules if "alert" in r]
    assert len(records) >= 7
    assert len(alerts) >= 15
    assert len(set(records)) == len(records)
    assert len(set(alerts)) == len(alerts)
    assert set(alerts) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(alerts)


def test_every_alert_has_severity_family_and_a_runbook_section() -> None:
    headings = set(re.findall(r"^#{2,4} (\S+)\s*$", RUNBOOK.read_text(), flags=re.M))
    for rule in (r for r in rules_of() if "alert" in r):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["labels"].get("family"), name
        notes = rule["annotations"]
        assert {"summary", "description", "runbook", "runbook_url"} <= notes.keys(), name
        # GitHub-style anchor of the heading "### <AlertName>".
        assert notes["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name in headings, f"docs/runbook.md has no section for {name}"


def test_every_alert_says_who_pages_for_its_condition() -> None:
    """Worker-health rules page; LLM-traffic rules are info, name the stream rule that pages, and never page."""
    alerts = [r for r in rules_of() if "alert" in r]
    for rule in alerts:
        name, labels = rule["alert"], rule["labels"]
        assert labels.get("llmpulse_kind") in KINDS, name
        if labels["llmpulse_kind"] == "traffic":
            assert labels["severity"] == "info", name
            assert labels.get("stream_rule") in MITIGATIONS, f"{name}: no stream rule {labels.get('stream_rule')}"
        else:
            assert "stream_rule" not in labels, name
            read = metric_names(rule["expr"])
            assert read <= WORKER_HEALTH_METRICS, f"{name} pages on traffic metrics {read - WORKER_HEALTH_METRICS}"
    kinds = {r["labels"]["llmpulse_kind"] for r in alerts}
    assert kinds == KINDS


def test_recording_rules_follow_the_naming_convention() -> None:
    for rule in (r for r in rules_of() if "record" in r):
        assert re.fullmatch(r"llmpulse:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_rules_read_only_catalogued_metrics() -> None:
    known = catalogue_names()
    for rule in rules_of():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, (
            f"{rule.get('alert') or rule.get('record')} reads {unknown}, not in docs/metrics.md"
        )


def test_catalogue_lists_every_recording_rule() -> None:
    records = {r["record"] for r in rules_of() if "record" in r}
    assert records <= catalogue_names()


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = unit_test_cases()
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    alerts = {r["alert"] for r in rules_of() if "alert" in r}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_unit_tests_load_the_rules_file() -> None:
    for path in UNIT_TESTS:
        files = yaml.safe_load(path.read_text())["rule_files"]
        assert [(path.parent / f).resolve() for f in files] == [RULES.resolve()], path.name


# ---- promtool / amtool


@pytest.mark.ops
def test_promtool_check_rules() -> None:
    result = run([require_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    rules = rules_of()
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.ops
def test_promtool_unit_tests_pass() -> None:
    result = run([require_tool("promtool"), "test", "rules", *map(str, UNIT_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.ops
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


@pytest.mark.ops
def test_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = run([require_tool("promtool"), "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(RULES.relative_to(PROM_DIR)) in result.stdout


@pytest.mark.ops
def test_alertmanager_config_is_valid() -> None:
    result = run([require_tool("amtool"), "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr


def route(labels: list[str]) -> str:
    result = run(
        [require_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.mark.ops
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


@pytest.mark.ops
def test_no_prometheus_traffic_rule_pages_and_every_worker_rule_does() -> None:
    """Each rule's static labels through the real routing tree: one paging path per condition."""
    for rule in (r for r in rules_of() if "alert" in r):
        labels = rule["labels"]
        got = route([f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in labels.items())])
        if labels["llmpulse_kind"] == "traffic":
            assert got == NOT_NOTIFIED, rule["alert"]
        else:
            assert got == (PAGER if labels["severity"] in {"critical", "warning"} else "llmpulse-digest"), rule["alert"]
