"""docker-compose.yml and the Dockerfile, checked statically: schema, files, ports, topics, scrape targets."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmpulse.config import Topics
from llmpulse.processors.topics import layout_problems
from tests.support.deploy import PROM_DIR, PROVISIONING, REPO, deployed_topics

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS = PROM_DIR / "prometheus.yml"
DATASOURCES = PROVISIONING / "datasources" / "prometheus.yml"
SERVICES = {
    "kafka",
    "kafka-init",
    "worker",
    "simulator",
    "alert-forwarder",
    "prometheus",
    "alertmanager",
    "grafana",
    "otel-collector",
}
WEB_PORT = 6066


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with nothing set in the environment, so the test does not depend on it."""
    return re.sub(r"\$\{([A-Za-z0-9_]+):-([^}]*)\}", r"\2", text)


def compose() -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text()))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def bind_mounts() -> list[tuple[str, str, str]]:
    """(service, host path, container path) of every ./ bind mount."""
    mounts = []
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                mounts.append((name, source, target))
    return mounts


def host_path(service: str, container_path: str) -> Path:
    """Where a container path of a service lives in the repo, through its bind mounts."""
    for name, source, target in bind_mounts():
        if name == service and (container_path == target or container_path.startswith(target + "/")):
            return REPO / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted from the repo into {service}")


def test_compose_matches_the_compose_spec_schema() -> None:
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or spec.origin is None:
        pytest.skip("check-jsonschema (which bundles the compose-spec schema) not installed")
    schema_path = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads(schema_path.read_text()))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_all_services_present() -> None:
    assert set(services()) == SERVICES


def test_every_bind_mount_exists() -> None:
    mounts = bind_mounts()
    assert {name for name, _, _ in mounts} == {"prometheus", "alertmanager", "grafana", "otel-collector"}
    for name, source, _ in mounts:
        assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_config_files_named_on_command_lines_are_mounted() -> None:
    svcs = services()
    for name in ("prometheus", "alertmanager"):
        flags = [arg for arg in svcs[name]["command"] if arg.startswith("--config.file=")]
        assert len(flags) == 1, name
        assert host_path(name, flags[0].split("=", 1)[1]).is_file(), name
    dashboard_home = svcs["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", dashboard_home).is_file()


def test_worker_image_is_built_here_and_shared() -> None:
    svcs = services()
    build = svcs["worker"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    image = svcs["worker"]["image"]
    for name in ("simulator", "alert-forwarder"):
        assert svcs[name]["image"] == image, name
    assert svcs["worker"]["command"] == ["worker"]
    assert svcs["simulator"]["command"][0] == "simulate"
    assert svcs["alert-forwarder"]["command"][:2] == ["alerts", "forward"]


def test_worker_scales_and_uses_port_6066() -> None:
    worker = services()["worker"]
    assert isinstance(worker["deploy"]["replicas"], int) and worker["deploy"]["replicas"] >= 1
    assert worker["environment"]["LLMPULSE_WEB_PORT"] == str(WEB_PORT)
    # A fixed host port would make a second replica fail to start.
    for port in worker["ports"]:
        assert isinstance(port, dict) and port["target"] == WEB_PORT and "published" not in port


def test_kafka_address_is_the_advertised_internal_listener() -> None:
    svcs = services()
    kafka_env = svcs["kafka"]["environment"]
    advertised = dict(entry.split("://") for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    for name in ("worker", "simulator", "alert-forwarder"):
        assert svcs[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised["PLAINTEXT"], name
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_topic_names_match_the_code_defaults() -> None:
    expected = deployed_topics()
    env = services()["worker"]["environment"]
    assert {k: env[k] for k in expected} == expected


def test_the_topics_kafka_init_creates_fit_the_workers() -> None:
    """What kafka-init creates first, the worker must accept (processors/topics.py's layout check): the calls and
    OTLP topics with exactly the workers' LLMPULSE_TOPIC_PARTITIONS, so every partition has its state."""
    env = services()["worker"]["environment"]
    created = {name: int(count) for name, count in
               re.findall(r"\b([a-z_-]+):(\d+)\b", services()["kafka-init"]["command"][0])}
    topics = Topics(**{name: env[f"LLMPULSE_TOPIC_{name.upper()}"] for name in ("calls", "otlp")
                       if f"LLMPULSE_TOPIC_{name.upper()}" in env})
    assert topics.calls in created and topics.otlp in created
    assert layout_problems(topics, int(env["LLMPULSE_TOPIC_PARTITIONS"]), created, otlp=True) == []


def test_the_collector_writes_otlp_where_the_workers_read_it() -> None:
    svcs = services()
    config_flag = next(arg for arg in svcs["otel-collector"]["command"] if arg.startswith("--config="))
    config = yaml.safe_load(host_path("otel-collector", config_flag.split("=", 1)[1]).read_text())
    kafka = config["exporters"]["kafka"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["kafka"]
    worker = svcs["worker"]["environment"]
    assert worker["LLMPULSE_OTLP__ENABLED"] == "true"
    assert kafka["traces"]["topic"] == worker.get("LLMPULSE_TOPIC_OTLP", Topics().otlp)
    assert kafka["traces"]["encoding"] == worker["LLMPULSE_OTLP__ENCODING"]
    assert svcs["otel-collector"]["environment"]["KAFKA_BROKERS"] == worker["KAFKA_BOOTSTRAP_SERVERS"]


def test_prometheus_scrapes_the_worker_service_and_alerts_alertmanager() -> None:
    prom = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    worker_job = jobs["llmpulse-worker"]  # the alert rules select up{job="llmpulse-worker"}
    assert worker_job["metrics_path"] == "/metrics"
    sd = worker_job["dns_sd_configs"]
    assert [name for conf in sd for name in conf["names"]] == ["worker"]
    assert all(conf["port"] == WEB_PORT for conf in sd)
    targets = [
        t
        for am in prom["alerting"]["alertmanagers"]
        for conf in am["static_configs"]
        for t in conf["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    assert "9093:9093" in services()["alertmanager"]["ports"]
    forward = services()["alert-forwarder"]["command"]
    assert forward[forward.index("--alertmanager") + 1] == "http://alertmanager:9093"


def test_prometheus_rule_glob_finds_the_rules_through_the_mount() -> None:
    prom = yaml.safe_load(PROMETHEUS.read_text())
    config_dir = host_path("prometheus", "/etc/prometheus/prometheus.yml").parent
    found = [p for pattern in prom["rule_files"] for p in config_dir.glob(pattern)]
    assert [p.name for p in found] == ["llmpulse.rules.yml"]


def test_grafana_datasource_points_at_the_prometheus_service() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    urls = {s["type"]: s["url"] for s in sources}
    assert urls["prometheus"] == "http://prometheus:9090"
    assert urls["alertmanager"] == "http://alertmanager:9093"
    assert "9090:9090" in services()["prometheus"]["ports"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_runs_the_worker_on_6066() -> None:
    instructions = dockerfile_instructions()
    bases = [arg.split()[0] for op, arg in instructions if op == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    assert ("EXPOSE", str(WEB_PORT)) in instructions
    assert ("ENTRYPOINT", '["llmpulse"]') in instructions
    assert ("CMD", '["worker"]') in instructions
    assert any(op == "RUN" and '".[processor,simulation,otlp]"' in arg for op, arg in instructions)
    assert any(op == "USER" and arg != "root" for op, arg in instructions)


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for op, arg in dockerfile_instructions():
        if op != "COPY" or arg.startswith("--from"):
            continue
        *sources, _ = arg.split()
        for source in sources:
            if "*" in source:
                continue  # optional by design
            assert (REPO / source).exists(), source
            assert source.strip("./") not in ignored, f"{source} is copied but .dockerignore drops it"
    # The packages pyproject maps must all be copied.
    pyproject = (REPO / "pyproject.toml").read_text()
    mapped = set(re.findall(r'= "(\w+)"', pyproject.split("package-dir", 1)[1].split("\n", 1)[0]))
    copied = {arg.split()[0].strip("./") for op, arg in dockerfile_instructions() if op == "COPY"}
    assert mapped <= copied
    # So must the build backend pyproject names (backend-path), and .dockerignore must let it through.
    backend = "scripts/" + tomllib.loads(pyproject)["build-system"]["build-backend"] + ".py"
    assert backend in copied and f"!{backend}" in ignored
