"""Prometheus rules and their promtool unit tests, checked statically: names, labels, runbook sections, who
pages, catalogued metrics. promtool and amtool run them in tests/ops/test_promtool.py."""

from __future__ import annotations

import re
from typing import Any

import yaml

from llmpulse.processors.core.mitigations import MITIGATIONS
from tests.support.deploy import RULE_UNIT_TESTS, RULES, RUNBOOK, catalogue_names, metric_names, rules_of

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
    "llmpulse_worker_stalls_total",
    "llmpulse_consumer_lag_records",
    "llmpulse_events_processed_total",
    "llmpulse_batches_processed_total",
    "llmpulse_dead_letter_total",
    "llmpulse_source_rewinds_total",
    "llmpulse_unpriced_calls_total",
    "llmpulse_metric_series_folded_total",
}
KINDS = {"worker", "traffic"}


def unit_test_cases() -> list[dict[str, Any]]:
    cases = []
    for path in RULE_UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(group.get("alert_rule_test", []))
    return cases


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
    for path in RULE_UNIT_TESTS:
        files = yaml.safe_load(path.read_text())["rule_files"]
        assert [(path.parent / f).resolve() for f in files] == [RULES.resolve()], path.name
