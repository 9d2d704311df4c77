"""The Helm chart through helm: `helm lint` and `helm template` renders. The chart's files are checked without
helm in tests/unit/deploy/test_helm_chart.py."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.deploy import ADAPTER_VALUES, CHART, RULES, deployed_topics
from tests.support.tools import require_tool

CORE_KINDS = {"Deployment", "Service", "ConfigMap", "Secret"}
KUBERNETES_VERSION = "1.33.0"


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm")


def helm_run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "obs"]
    for value in sets:
        args += ["--set", value]
    result = helm_run(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("sets", [(), ("serviceMonitor.enabled=true", "prometheusRule.enabled=true",
                                         "autoscaling.enabled=true")])
def test_helm_lint_strict(helm: str, sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict"]
    for value in sets:
        args += ["--set", value]
    result = helm_run(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_render_has_the_core_kinds_only(helm: str) -> None:
    assert set(by_kind(render(helm))) == CORE_KINDS


def test_monitoring_objects_are_gated_by_values(helm: str) -> None:
    kinds = set(by_kind(render(helm, "serviceMonitor.enabled=true")))
    assert kinds == CORE_KINDS | {"ServiceMonitor"}
    kinds = set(by_kind(render(helm, "prometheusRule.enabled=true")))
    assert kinds == CORE_KINDS | {"PrometheusRule"}


def test_prometheus_rule_carries_every_rule_of_the_rules_file(helm: str) -> None:
    rule = by_kind(render(helm, "prometheusRule.enabled=true"))["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = yaml.safe_load(RULES.read_text())
    assert rule["spec"] == expected
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {r["alert"] for g in expected["groups"] for r in g["rules"] if "alert" in r}


def test_traffic_rules_can_be_left_out(helm: str) -> None:
    """trafficRules=false keeps the recording rules and the paging worker-health alerts, byte for byte."""
    rule = by_kind(
        render(
            helm, "prometheusRule.enabled=true", "prometheusRule.trafficRules=false",
            "prometheusRule.runbookBaseUrl=https://example.org/llmpulse",
        )
    )["PrometheusRule"]
    expected = yaml.safe_load(RULES.read_text())
    for group in expected["groups"]:
        group["rules"] = [r for r in group["rules"] if r.get("labels", {}).get("llmpulse_kind") != "traffic"]
        for r in group["rules"]:
            if "annotations" in r:
                r["annotations"]["runbook_url"] = "https://example.org/llmpulse/" + r["annotations"]["runbook_url"]
    expected["groups"] = [g for g in expected["groups"] if g["rules"]]
    assert rule["spec"] == expected
    kinds = {r["labels"]["llmpulse_kind"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert kinds == {"worker"}


def test_runbook_base_url_prefixes_every_runbook_link(helm: str) -> None:
    rule = by_kind(
        render(
            helm, "prometheusRule.enabled=true", "prometheusRule.runbookBaseUrl=https://example.org/llmpulse/"
        )
    )["PrometheusRule"]
    urls = [
        r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert urls and all(u.startswith("https://example.org/llmpulse/docs/runbook.md#") for u in urls)


def test_deployment_wiring(helm: str) -> None:
    objs = by_kind(
        render(
            helm, "replicaCount=3", "kafka.bootstrapServers=broker-0:9092", "config.LLMPULSE_LOG_LEVEL=debug"
        )
    )
    deployment, config, secret, service = (
        objs["Deployment"],
        objs["ConfigMap"],
        objs["Secret"],
        objs["Service"],
    )
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["worker"]
    assert container["ports"] == [{"name": "http", "containerPort": 6066, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    token_ref = container["env"][0]["valueFrom"]["secretKeyRef"]
    assert container["env"][0]["name"] == "LLMPULSE_API_TOKEN"
    assert token_ref["name"] == secret["metadata"]["name"] and token_ref["key"] in secret["data"]
    assert len(base64.b64decode(secret["data"][token_ref["key"]])) == 40  # generated
    assert config["data"] == {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-0:9092",
        "LLMPULSE_WEB_PORT": "6066",
        **deployed_topics(),
        "LLMPULSE_LOG_LEVEL": "debug",
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_given_token_and_existing_secret(helm: str) -> None:
    secret = by_kind(render(helm, "apiToken.value=s3cret"))["Secret"]
    assert base64.b64decode(secret["data"]["api-token"]) == b"s3cret"
    objs = by_kind(render(helm, "apiToken.existingSecret=team-token", "apiToken.existingSecretKey=token"))
    assert "Secret" not in objs
    ref = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"][
        "secretKeyRef"
    ]
    assert ref == {"name": "team-token", "key": "token"}


def test_service_monitor_names_the_job_the_rules_expect(helm: str) -> None:
    objs = by_kind(render(helm, "serviceMonitor.enabled=true"))
    monitor, service = objs["ServiceMonitor"], objs["Service"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "llmpulse-worker"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["obs"]}


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ("replicaCount=-1", "/replicaCount"),
        ("web.port=0", "/web/port"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("topics.calls=bad topic", "/topics/calls"),
    ],
)
def test_helm_refuses_values_outside_the_schema(helm: str, bad: str, path: str) -> None:
    result = helm_run(helm, "template", "rel", str(CHART), "--set", bad)
    assert result.returncode != 0
    assert f"'{path}'" in result.stderr


def test_core_manifests_match_the_kubernetes_schemas(helm: str) -> None:
    """Offline, with the schemas kubernetes-validate bundles (the operator CRDs are not among them)."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed"
    )
    for doc in render(helm, "serviceMonitor.enabled=true", "prometheusRule.enabled=true"):
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kafka_tls_and_sasl_come_from_kubernetes_secrets(helm: str) -> None:
    objs = by_kind(render(helm, "kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=SCRAM-SHA-512",
                          "kafka.sasl.username=llmpulse-worker", "kafka.sasl.passwordSecret.name=kafka-sasl",
                          "kafka.tls.secretName=kafka-tls"))
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_USERNAME"] == "llmpulse-worker"
    assert env["KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "kafka-sasl", "key": "password"}}
    assert env["KAFKA_SSL_CA_LOCATION"] == "/etc/llmpulse/kafka-tls/ca.crt"
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "kafka-tls", "mountPath": "/etc/llmpulse/kafka-tls", "readOnly": True}]
    assert pod["volumes"] == [{"name": "kafka-tls", "secret": {"secretName": "kafka-tls", "defaultMode": 0o440}}]
    assert "KAFKA_SASL_PASSWORD" not in objs["ConfigMap"]["data"]
    plain = by_kind(render(helm))["Deployment"]["spec"]["template"]["spec"]
    assert [e["name"] for e in plain["containers"][0]["env"]] == ["LLMPULSE_API_TOKEN"] and "volumes" not in plain


def test_autoscaler_scales_the_worker_on_consumer_lag_then_cpu(helm: str) -> None:
    objs = by_kind(render(helm, "autoscaling.enabled=true", "topics.calls=team-calls", "serviceMonitor.enabled=true"))
    hpa, deployment = objs["HorizontalPodAutoscaler"], objs["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
    assert "replicas" not in deployment["spec"]  # the HPA owns the count; an upgrade must not reset it
    lag, cpu = hpa["spec"]["metrics"]
    assert lag["type"] == "External"
    assert lag["external"]["metric"] == {"name": "llmpulse_consumer_lag_records",
                                         "selector": {"matchLabels": {"topic": "team-calls"}}}
    assert lag["external"]["target"] == {"type": "AverageValue", "averageValue": "5000"}
    assert cpu == {"type": "Resource", "resource": {"name": "cpu",
                                                    "target": {"type": "Utilization", "averageUtilization": 80}}}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"]  # utilization is relative to the request


def test_autoscaler_names_the_metric_the_adapter_serves(helm: str) -> None:
    """The worker exports it (tests/unit/deploy/test_helm_chart.py); prometheus-adapter serves it by that name."""
    hpa = by_kind(render(helm, "autoscaling.enabled=true"))["HorizontalPodAutoscaler"]
    name = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    [rule] = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]
    assert rule["name"]["as"] == name == "llmpulse_consumer_lag_records"


def test_autoscaler_cpu_only_and_off_by_default(helm: str) -> None:
    assert "HorizontalPodAutoscaler" not in by_kind(render(helm))
    assert by_kind(render(helm))["Deployment"]["spec"]["replicas"] == 2
    hpa = by_kind(render(helm, "autoscaling.enabled=true", "autoscaling.consumerLag.enabled=false",
                         "autoscaling.maxReplicas=6"))["HorizontalPodAutoscaler"]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"] and hpa["spec"]["maxReplicas"] == 6


@pytest.mark.parametrize("sets", [
    ("autoscaling.consumerLag.enabled=false", "autoscaling.targetCPUUtilizationPercentage=0"),
    ("autoscaling.minReplicas=4", "autoscaling.maxReplicas=3"),
])
def test_autoscaler_refuses_values_that_cannot_scale(helm: str, sets: tuple[str, ...]) -> None:
    args = ["template", "rel", str(CHART), "--set", "autoscaling.enabled=true"]
    for value in sets:
        args += ["--set", value]
    result = helm_run(helm, *args)
    assert result.returncode != 0 and "autoscaling" in result.stderr


def test_autoscaler_matches_the_kubernetes_schema(helm: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    for doc in render(helm, "autoscaling.enabled=true"):
        if doc["kind"] in CORE_KINDS | {"HorizontalPodAutoscaler"}:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
