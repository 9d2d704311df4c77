"""The local broker's generated config and its failure messages, checked without starting a JVM."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
from pathlib import Path

import pytest

from llmpulse import broker as broker_mod
from llmpulse.broker import (
    BrokerConfig,
    BrokerError,
    LocalBroker,
    java_major,
    new_cluster_id,
    render_pom,
    render_server_properties,
    require_tools,
)


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def cfg(tmp_path: Path) -> BrokerConfig:
    return BrokerConfig(home=tmp_path / "home", data_dir=tmp_path / "data", port=29092, num_partitions=5)


def test_every_replication_setting_fits_a_single_node(cfg: BrokerConfig) -> None:
    props = _props(render_server_properties(cfg))

    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "min.insync.replicas", "default.replication.factor"):
        assert props[key] == "1", key
    assert props["process.roles"] == "broker,controller"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["num.partitions"] == "5"


def test_listeners_use_port_and_port_plus_one(cfg: BrokerConfig) -> None:
    props = _props(render_server_properties(cfg))

    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:29093"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert Path(props["log.dirs"]).parent == cfg.data_dir
    assert cfg.bootstrap == "127.0.0.1:29092"


def test_env_overrides_port_and_jar_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMPULSE_BROKER_PORT", "19999")
    monkeypatch.setenv("LLMPULSE_BROKER_HOME", str(tmp_path / "jars"))

    from_env = BrokerConfig.from_env()
    explicit = BrokerConfig.from_env(port=18000)

    assert (from_env.port, from_env.controller_port) == (19999, 20000)
    assert from_env.home == tmp_path / "jars"
    assert explicit.port == 18000
    # One data dir per port: two brokers never share a log.
    assert from_env.data_dir != explicit.data_dir


def test_pom_pins_kafka_tools_and_the_log4j2_binding() -> None:
    pom = render_pom("4.3.1")

    assert "<artifactId>kafka_2.13</artifactId><version>4.3.1</version>" in pom
    assert "<artifactId>kafka-tools</artifactId><version>4.3.1</version>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(20)}

    assert len(ids) == 20
    for cid in ids:
        assert len(cid) == 22
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_a_cluster_id_starting_with_a_dash_reaches_the_storage_tool_as_a_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(broker_mod, "new_cluster_id", lambda: "-4xQ9vbNTb2Ibz8lm6cRIA")  # 1 id in 64 looks so
    monkeypatch.setattr(subprocess, "run", lambda cmd, **_: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    LocalBroker(BrokerConfig.from_env(port=19092, data_dir=tmp_path))._format_storage("java", tmp_path)
    [cmd] = ran
    assert "--cluster-id=-4xQ9vbNTb2Ibz8lm6cRIA" in cmd  # "-t", "-4x..." made argparse take it for an option


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
    ],
)
def test_java_major(output: str, major: int) -> None:
    assert java_major(output) == major


def _which_without(missing: str) -> object:
    return lambda name: None if name == missing else f"/usr/bin/{name}"


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod.shutil, "which", _which_without("java"))

    with pytest.raises(BrokerError, match=r"java was not found on PATH.*Java 17\+"):
        require_tools()


def test_missing_maven_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod.shutil, "which", _which_without("mvn"))

    with pytest.raises(BrokerError, match=r"mvn was not found on PATH.*Maven"):
        require_tools()


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod.shutil, "which", _which_without("nothing"))
    old = subprocess.CompletedProcess(["java"], 0, stdout="", stderr='openjdk version "11.0.22" 2024-01-16')
    monkeypatch.setattr(broker_mod.subprocess, "run", lambda *a, **k: old)

    with pytest.raises(BrokerError, match=r"needs Java 17 or newer; /usr/bin/java is Java 11"):
        require_tools()


def test_installed_jars_are_reused_without_maven(monkeypatch: pytest.MonkeyPatch, cfg: BrokerConfig) -> None:
    cfg.home.mkdir(parents=True)
    (cfg.home / ".complete").write_text("kafka 4.3.1\n")
    monkeypatch.setattr(broker_mod.shutil, "which", lambda name: None)

    assert LocalBroker(cfg).ensure_installed() == cfg.home / "libs"


def test_install_without_maven_fails_clearly(monkeypatch: pytest.MonkeyPatch, cfg: BrokerConfig) -> None:
    monkeypatch.setattr(broker_mod.shutil, "which", _which_without("mvn"))

    with pytest.raises(BrokerError, match="mvn was not found"):
        LocalBroker(cfg).ensure_installed()


def test_an_interrupted_fetch_is_fetched_again_and_a_finished_one_never(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(broker_mod, "require_tools", lambda: ("/usr/bin/java", "/usr/bin/mvn"))
    fetches: list[str] = []

    def interrupted(mvn: str) -> None:
        fetches.append(mvn)
        raise BrokerError("network down")

    with pytest.raises(BrokerError, match="network down"):
        broker_mod.install_once(tmp_path / "home", "thing 1.0", interrupted)
    broker_mod.install_once(tmp_path / "home", "thing 1.0", fetches.append)
    broker_mod.install_once(tmp_path / "home", "thing 1.0", fetches.append)

    assert fetches == ["/usr/bin/mvn", "/usr/bin/mvn"]


def test_a_recycled_pid_is_not_taken_for_the_broker(cfg: BrokerConfig) -> None:
    cfg.data_dir.mkdir(parents=True)
    broker = LocalBroker(cfg)
    broker.pid_file.write_text(f"{os.getpid()}\n")  # alive, but this is pytest, not kafka.Kafka

    status = broker.status()

    assert not status.running and status.pid is None
    assert broker.stop() is False  # and stop must not signal it
    assert not broker.pid_file.exists()


def test_start_refuses_a_busy_port(cfg: BrokerConfig) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = LocalBroker(BrokerConfig(home=cfg.home, data_dir=cfg.data_dir, port=port))

        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            broker.start()
