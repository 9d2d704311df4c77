"""The Grafana dashboard, checked without Grafana: layout, data source wiring, and every panel query is
valid PromQL over catalogued metrics. tests/ops runs the queries through promtool and a live Prometheus."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.deploy import (
    DASHBOARD,
    PROVISIONING,
    REPO,
    catalogue_names,
    dashboard,
    metric_names,
    panels,
    queries,
    rules_of,
    substitute,
)

ROWS = [
    "Overview",
    "Latency",
    "Cost and budgets",
    "Quality and drift",
    "Security",
    "Providers",
    "Alerts and pipeline",
]
DS_UID = "${DS_PROMETHEUS}"
# Series Prometheus makes itself, not the worker.
BUILTIN_METRICS = {"up", "ALERTS"}


def used_metrics(expr: str) -> set[str]:
    names = metric_names(expr)
    if re.search(r"\bup\{", expr):
        names.add("up")
    if "ALERTS{" in expr:
        names.add("ALERTS")
    return names


def recording_rules() -> dict[str, str]:
    return {r["record"]: r["expr"] for r in rules_of() if "record" in r}


def test_dashboard_identity_and_schema() -> None:
    dash = dashboard()
    assert dash["uid"] == "llmpulse"
    assert dash["schemaVersion"] >= 36  # Grafana 9.x and later
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    # The provisioned data source's uid is the variable's default.
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    prom_uids = {d["uid"] for d in provisioned if d["type"] == "prometheus"}
    assert variables["DS_PROMETHEUS"]["current"]["value"] in prom_uids


def test_rows_in_order_and_none_empty() -> None:
    items = dashboard()["panels"]
    titles = [p["title"] for p in items if p["type"] == "row"]
    assert titles == ROWS
    kinds = [p["type"] for p in items]
    for i, kind in enumerate(kinds):
        if kind == "row":
            assert i + 1 < len(kinds) and kinds[i + 1] != "row", f"row {items[i]['title']} has no panel"


def test_panels_use_the_prometheus_variable() -> None:
    for panel in panels():
        assert panel["datasource"]["uid"] == DS_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DS_UID, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panel_ids_unique_and_grid_without_overlap() -> None:
    items = dashboard()["panels"]
    ids = [p["id"] for p in items]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for p in items:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


def test_queries_read_only_catalogued_metrics() -> None:
    known = catalogue_names() | BUILTIN_METRICS
    for title, expr in queries():
        unknown = used_metrics(expr) - known
        assert not unknown, f"panel {title!r} reads {unknown}, not in docs/metrics.md"
    assert set(recording_rules()) <= catalogue_names()


def test_every_catalogued_worker_metric_is_on_the_dashboard() -> None:
    """Directly, or through a recording rule a panel shows."""
    rules = recording_rules()
    shown: set[str] = set()
    for _, expr in queries():
        for name in used_metrics(expr):
            shown.add(name)
            shown |= used_metrics(rules.get(name, ""))
    worker_metrics = {n for n in catalogue_names() if ":" not in n}
    assert worker_metrics - shown == set()


def test_queries_parse_as_promql() -> None:
    parser = pytest.importorskip("promql_parser", reason="promql-parser not installed (install-ops-tools.sh)")
    for title, expr in queries():
        try:
            parser.parse(substitute(expr))
        except Exception as exc:  # the binding raises plain ValueError/RuntimeError with the position
            pytest.fail(f"panel {title!r}: {exc}\n{expr}")


def test_a_broken_query_is_caught() -> None:
    parser = pytest.importorskip("promql_parser", reason="promql-parser not installed (install-ops-tools.sh)")
    with pytest.raises(Exception, match=r"."):
        parser.parse(
            substitute(
                'sum by (le (rate(llmpulse_llm_requests_total{service=~"$service"}[$__rate_interval]))'
            )
        )


def test_dashboard_provider_points_at_the_dashboard_mount() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "llmpulse.yml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./{DASHBOARD.parent.relative_to(REPO)}:{provider['options']['path']}:ro" in mounts
