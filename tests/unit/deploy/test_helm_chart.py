"""The Helm chart without helm: values schema, chart metadata, the rules file it ships. helm lint and
helm template renders are in tests/ops/test_helm.py."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.deploy import CHART, RULES


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
