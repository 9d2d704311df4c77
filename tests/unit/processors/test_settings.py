"""ProcessorSettings: defaults, LLMPULSE_ env overrides (nested with __), YAML file, secrets kept out of logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from llmpulse.processors.settings import LatencyRules, ProcessorSettings
from tests.support.cli import run_cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own LLMPULSE_* / Kafka variables must not leak into the answers."""
    for name in list(os.environ):
        if name.startswith("LLMPULSE_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def _yaml(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "llmpulse.yaml"
    path.write_text(text)
    monkeypatch.setenv("LLMPULSE_CONFIG_FILE", str(path))
    return path


def test_defaults_are_the_documented_thresholds() -> None:
    settings = ProcessorSettings()
    assert settings.latency.p95_warning_s == 2.0
    assert settings.latency.p99_critical_s == 5.0
    assert settings.errors.warning_ratio == 0.05
    assert settings.budgets.global_day_usd == 50.0
    assert settings.validation.max_labels == 32
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.api_token is None


def test_env_overrides_one_nested_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_LATENCY__P95_WARNING_S", "1.5")
    monkeypatch.setenv("LLMPULSE_BUDGETS__SERVICE_DAY_USD", "12.5")
    monkeypatch.setenv("LLMPULSE_WEB_PORT", "7077")
    settings = ProcessorSettings()
    assert settings.latency.p95_warning_s == 1.5
    assert settings.latency.p99_critical_s == 5.0  # the rest of the group keeps its defaults
    assert settings.budgets.service_day_usd == 12.5
    assert settings.web_port == 7077


def test_env_tuple_values_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_LATENCY__WINDOWS_S", "[30, 120]")
    assert ProcessorSettings().latency.windows_s == (30, 120)


def test_bad_env_value_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_LATENCY__P95_WARNING_S", "fast")
    with pytest.raises(ValidationError, match="p95_warning_s"):
        ProcessorSettings()


def test_kafka_bootstrap_comes_from_the_shared_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    assert ProcessorSettings().bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_yaml_file_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _yaml(
        tmp_path,
        "app_id: fleet-a\n"
        "latency:\n  p99_critical_s: 9.0\n  windows_s: [60, 600]\n"
        "budgets:\n  global_day_usd: null\n"
        "guards:\n  hallucination_min_level: high\n",
        monkeypatch,
    )
    settings = ProcessorSettings()
    assert settings.app_id == "fleet-a"
    assert settings.latency.p99_critical_s == 9.0
    assert settings.latency.windows_s == (60, 600)
    assert settings.latency.p95_warning_s == 2.0
    assert settings.budgets.global_day_usd is None  # tracked, never alerted
    assert settings.guards.hallucination_min_level == "high"


def test_env_beats_yaml_and_both_merge_within_a_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _yaml(tmp_path, "latency:\n  p95_warning_s: 3.0\n  p99_critical_s: 9.0\n", monkeypatch)
    monkeypatch.setenv("LLMPULSE_LATENCY__P95_WARNING_S", "1.5")
    settings = ProcessorSettings()
    assert (settings.latency.p95_warning_s, settings.latency.p99_critical_s) == (1.5, 9.0)


def test_constructor_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_APP_ID", "from-env")
    assert ProcessorSettings(app_id="given").app_id == "given"
    assert ProcessorSettings(latency=LatencyRules(p95_warning_s=0.5)).latency.p95_warning_s == 0.5


def test_missing_config_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("LLMPULSE_CONFIG_FILE", str(missing))
    with pytest.raises(FileNotFoundError, match=f"LLMPULSE_CONFIG_FILE={missing} does not exist"):
        ProcessorSettings()


def test_a_typo_inside_a_group_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _yaml(tmp_path, "latency:\n  p95_warnign_s: 1.0\n", monkeypatch)
    with pytest.raises(ValidationError, match="p95_warnign_s"):
        ProcessorSettings()


def test_api_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_API_TOKEN", "tok-s3cret")
    settings = ProcessorSettings()
    assert isinstance(settings.api_token, SecretStr)
    assert settings.api_token.get_secret_value() == "tok-s3cret"
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "tok-s3cret" not in shown


def test_api_token_from_yaml_is_secret_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _yaml(tmp_path, "api_token: yaml-s3cret\n", monkeypatch)
    settings = ProcessorSettings()
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "yaml-s3cret"
    assert "yaml-s3cret" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = ProcessorSettings()
    with pytest.raises(ValidationError):
        settings.app_id = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.latency.p95_warning_s = 0.1  # type: ignore[misc]


def test_the_worker_prints_the_settings_in_effect_as_a_config_file_without_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"LLMPULSE_LATENCY__P95_WARNING_S": "1.5", "LLMPULSE_BUDGETS__USER_DAY_USD": "3",
                 "LLMPULSE_QUALITY__ROLLBACK_ENABLED": "true", "LLMPULSE_API_TOKEN": "tok-s3cret"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LLMPULSE_", "KAFKA_"))}, **overrides}

    printed = run_cli("worker", "--print-settings", env=env)

    assert printed.returncode == 0, printed.stderr
    assert "tok-s3cret" not in printed.stdout
    layout = yaml.safe_load(printed.stdout)
    assert layout["latency"]["p95_warning_s"] == 1.5 and layout["budgets"]["user_day_usd"] == 3.0
    assert layout["api_token"] == "**********"
    # Read back as the YAML file (the masked secret left out), it is the settings the variables gave.
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    from_variables = ProcessorSettings()
    for name in overrides:
        monkeypatch.delenv(name)
    _yaml(tmp_path, yaml.safe_dump({k: v for k, v in layout.items() if k != "api_token"}), monkeypatch)
    from_file = ProcessorSettings()
    assert from_file.model_dump(exclude={"api_token"}) == from_variables.model_dump(exclude={"api_token"})
    assert from_file.latency.p95_warning_s == 1.5 and from_file.quality.rollback_enabled  # not the defaults
