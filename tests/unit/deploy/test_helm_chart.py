"""The Helm chart without helm: values schema, chart metadata, the rules file it ships. helm lint and
helm template renders are in tests/ops/test_helm.py."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.deploy import ADAPTER_VALUES, CHART, RULES


def test_chart_rules_file_is_the_deploy_rules_file() -> None:
    chart_rules = CHART / "files" / "llmpulse.rules.yml"
    assert chart_rules.read_bytes() == RULES.read_bytes()
    if chart_rules.is_symlink():
        assert chart_rules.resolve() == RULES.resolve()


def test_default_values_satisfy_the_values_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


def test_values_schema_rejects_a_typo_and_a_bad_port() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads((CHART / "values.schema.json").read_text()))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not list(validator.iter_errors(values))
    assert list(validator.iter_errors({**values, "replicas": 3}))
    assert list(validator.iter_errors({**values, "web": {"port": 70000}}))


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "llmpulse"
    assert chart["type"] == "application"


def test_autoscaling_is_off_by_default_and_its_values_are_checked() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads((CHART / "values.schema.json").read_text()))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["autoscaling"]["enabled"] is False
    on = {**values, "autoscaling": {**values["autoscaling"], "enabled": True}}
    assert not list(validator.iter_errors(on))
    assert list(validator.iter_errors({**on, "autoscaling": {**on["autoscaling"], "minReplicas": 0}}))
    assert list(validator.iter_errors({**on, "autoscaling": {**on["autoscaling"], "targetCPU": 80}}))


def test_the_lag_metric_the_autoscaler_names_is_exported_by_the_worker_and_served_by_the_adapter() -> None:
    from prometheus_client import CollectorRegistry

    from llmpulse.processors.metrics import WorkerMetrics

    name = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]["consumerLag"]["metricName"]
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    lag = next(family for family in registry.collect() if family.name == name)
    assert lag.type == "gauge"
    [rule] = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]
    assert rule["name"]["as"] == name and rule["seriesQuery"].startswith(name + "{")
    assert "sum by (topic)" in rule["metricsQuery"]  # one value per topic: the HPA selects the calls topic
