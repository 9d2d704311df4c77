"""The deployment files (deploy/, docker-compose.yml, Dockerfile, helm/) and readers the unit and ops tests share."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from llmpulse.config import Topics

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
RULES = PROM_DIR / "rules" / "llmpulse.rules.yml"
RULE_UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))  # promtool unit tests of the rules
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "llmpulse.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
CHART = REPO / "helm" / "llmpulse"
ADAPTER_VALUES = REPO / "deploy" / "prometheus-adapter" / "values.yaml"  # the rule serving the HPA its lag metric
RUNBOOK = REPO / "docs" / "runbook.md"
CATALOGUE = REPO / "docs" / "metrics.md"

METRIC_RE = re.compile(r"\b(llmpulse(?:_[a-z0-9_]+|:[a-z0-9_:]+))")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# What Grafana substitutes before a dashboard query reaches Prometheus.
GRAFANA_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "service": ".*", "model": ".*"}


def rules_of(path: Path = RULES) -> list[dict[str, Any]]:
    """Every rule (recording and alerting) of a Prometheus rules file."""
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
            name = name.removesuffix(suffix)
        names.add(name)
    return names


def deployed_topics() -> dict[str, str]:
    """The topic variables the compose file and the chart set (every topic), with the code's default names."""
    topics = Topics()
    return {f"LLMPULSE_TOPIC_{item.name.upper()}": getattr(topics, item.name) for item in fields(Topics)}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def substitute(expr: str) -> str:
    """A dashboard query with the Grafana variables replaced as Grafana would."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARS, f"unknown dashboard variable ${name} in {expr}"
        return GRAFANA_VARS[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)
