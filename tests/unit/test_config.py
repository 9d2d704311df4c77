"""llmpulse.config reads the connection variables once; the SDK, the worker's settings and the CLI agree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmpulse.config import Topics, schema_registry_env, topics_env
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.producers.settings import PulseSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LLMPULSE_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def test_topics_default_without_the_environment() -> None:
    assert topics_env() == {}
    assert Topics.from_env() == Topics() == ProcessorSettings().topics
    assert Topics().calls == "llm-calls" and Topics().fleet == "llm-fleet"


def test_both_topic_variable_spellings_reach_every_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_TOPIC_CALLS", "old-calls")  # the compose file's and the chart's spelling
    monkeypatch.setenv("LLMPULSE_TOPICS__ALERTS", "new-alerts")  # the settings' nested spelling
    expected = Topics(calls="old-calls", alerts="new-alerts")
    assert Topics.from_env() == expected
    assert ProcessorSettings().topics == expected
    assert PulseSettings().topic == "old-calls"


def test_the_nested_spelling_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_TOPIC_CALLS", "old")
    monkeypatch.setenv("LLMPULSE_TOPICS__CALLS", "new")
    assert Topics.from_env().calls == ProcessorSettings().topics.calls == PulseSettings().topic == "new"


def test_topics_from_the_yaml_file_below_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "llmpulse.yaml"
    path.write_text("topics:\n  calls: yaml-calls\n  fleet: yaml-fleet\n")
    monkeypatch.setenv("LLMPULSE_CONFIG_FILE", str(path))
    assert ProcessorSettings().topics == Topics(calls="yaml-calls", fleet="yaml-fleet")
    monkeypatch.setenv("LLMPULSE_TOPIC_FLEET", "env-fleet")
    assert ProcessorSettings().topics == Topics(calls="yaml-calls", fleet="env-fleet")


def test_a_misspelt_topic_in_the_yaml_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "llmpulse.yaml"
    path.write_text("topics:\n  cals: typo\n")
    monkeypatch.setenv("LLMPULSE_CONFIG_FILE", str(path))
    with pytest.raises(ValueError, match="cals"):
        ProcessorSettings()


def test_schema_registry_variables_reach_the_sdk_and_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert schema_registry_env() == {}
    assert (PulseSettings().schema_registry_url, ProcessorSettings().schema_registry_url) == ("", None)
    monkeypatch.setenv("LLMPULSE_SCHEMA_REGISTRY_URL", "http://registry:8081")
    monkeypatch.setenv("LLMPULSE_SCHEMA_REGISTRY_AUTH", "user:s3cret")
    sdk, worker = PulseSettings(), ProcessorSettings()
    assert sdk.schema_registry_url == worker.schema_registry_url == "http://registry:8081"
    assert worker.schema_registry_auth is not None
    assert sdk.schema_registry_auth == worker.schema_registry_auth.get_secret_value() == "user:s3cret"
    assert "s3cret" not in repr(worker) + repr(sdk)


def test_schema_registry_from_the_yaml_file_below_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "llmpulse.yaml"
    path.write_text("schema_registry_url: http://yaml:8081\n")
    monkeypatch.setenv("LLMPULSE_CONFIG_FILE", str(path))
    assert ProcessorSettings().schema_registry_url == "http://yaml:8081"
    monkeypatch.setenv("LLMPULSE_SCHEMA_REGISTRY_URL", "http://env:8081")
    assert ProcessorSettings().schema_registry_url == "http://env:8081"


def test_kafka_bootstrap_is_one_variable_for_every_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092")
    assert PulseSettings().bootstrap_servers == ProcessorSettings().bootstrap_servers == "kafka-0:9092"
