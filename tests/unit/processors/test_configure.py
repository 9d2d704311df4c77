"""Each default is declared once, and every setting reaches the core config it is for.

The core configs (processors/core/*) hold the defaults; the settings groups (processors/settings.py) are made from
them or restate them in seconds and dollars, and processors/configure.py builds the configs back by keyword. These
tests fail when a default is written down a second time, when a setting is not carried over, and when a core
field has neither a setting nor a place in ``CORE_ONLY``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from llmpulse.processors import configure
from llmpulse.processors.core.engine import EngineConfig
from llmpulse.processors.core.fleet import FleetConfig
from llmpulse.processors.core.health import HealthConfig
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.wire.otlp import SpanMapping
from llmpulse.processors.wiring import wire

SETTINGS_PY = Path(configure.__file__).with_name("settings.py")

# Settings taken outside the core configs: the decoder's and the dead-letter records' limits, and whether and how
# OTLP spans are read (processors/app.py, wiring.py).
NOT_FOR_THE_CORE = frozenset(f"validation.{name}" for name in configure.DECODER_FIELDS) | {"otlp.enabled",
                                                                                          "otlp.encoding"}
# Core fields no setting exposes: the core's default is their only value.
CORE_ONLY = frozenset({
    "AlertConfig.stale_ms", "AlertConfig.max_incidents", "AlertConfig.priorities",
    "BreakerConfig.window_size", "BreakerConfig.min_calls", "BreakerConfig.half_open_max_calls",
    "BudgetLimits.projection_min_elapsed_ms",
    "DriftConfig.psi_bins", "DriftConfig.evaluate_every_ms",
    "GuardConfig.scan_chars", "GuardConfig.detect_ipv4", "GuardConfig.toxic_terms",
    "GuardMonitorConfig.max_tracked_users",
    "IncidentConfig.urgent_priorities", "IncidentConfig.max_incidents", "IncidentConfig.max_members_listed",
    "IncidentConfig.priorities",
    "SavingsConfig.relative_accuracy",
})


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LLMPULSE_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def _flatten(value: Any, path: str, owner: str, out: dict[str, tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
    """Leaf path -> ("ConfigClass.field", value) for every field of nested core configs."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(getattr(value, f.name), f"{path}.{f.name}", f"{type(value).__name__}.{f.name}", out)
    else:
        out[path] = (owner, value)
    return out


def built(settings: ProcessorSettings) -> dict[str, tuple[str, Any]]:
    """Every leaf of every config configure.py builds."""
    out: dict[str, tuple[str, Any]] = {}
    for name, config in (("engine", configure.engine_config(settings)), ("fleet", configure.fleet_config(settings)),
                         ("validation", configure.validation_limits(settings)),
                         ("otlp", configure.span_mapping(settings)), ("health", configure.health_config(settings))):
        _flatten(config, name, name, out)
    return out


def _groups() -> dict[str, type[BaseModel]]:
    return {name: field.annotation for name, field in ProcessorSettings.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


SETTINGS = [f"{group}.{name}" for group, model in _groups().items() for name in model.model_fields]


def _other(value: Any) -> Any:
    """A valid value different from ``value``."""
    if value is None:
        return 7
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 1.0
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, tuple):
        return (*value, _other(value[-1])) if value else ("changed",)
    raise TypeError(f"no other value for {value!r}")


def changed_by(setting: str) -> set[str]:
    """The core leaves that move when this one setting moves."""
    group, name = setting.split(".")
    current = getattr(ProcessorSettings(), group)
    choices = typing.get_args(type(current).model_fields[name].annotation)  # a Literal: another allowed value
    other = next((c for c in choices if c != getattr(current, name)), None) if choices and all(
        isinstance(c, str) for c in choices) else _other(getattr(current, name))
    changed = type(current)(**{**current.model_dump(), name: other})
    moved = ProcessorSettings(**{group: changed})
    before, after = built(ProcessorSettings()), built(moved)
    return {path for path in before if before[path][1] != after[path][1]}


def test_the_settings_defaults_are_the_core_defaults() -> None:
    settings = ProcessorSettings()
    assert configure.engine_config(settings) == EngineConfig()
    assert configure.fleet_config(settings) == FleetConfig()
    assert configure.validation_limits(settings) == Limits()
    assert configure.span_mapping(settings) == SpanMapping()
    assert configure.health_config(settings) == HealthConfig()


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_setting_is_carried_into_a_core_config(setting: str) -> None:
    moved = changed_by(setting)
    if setting in NOT_FOR_THE_CORE:
        assert not moved
    else:
        assert moved, f"{setting} changes no core config: configure.py does not carry it over"


def test_every_core_field_has_a_setting_or_is_core_only() -> None:
    carried = set().union(*(changed_by(setting) for setting in SETTINGS))
    leaves = built(ProcessorSettings())
    missing = sorted(path for path, (owner, _) in leaves.items() if path not in carried and owner not in CORE_ONLY)
    assert not missing, f"core fields no setting reaches (give them one, or list them in CORE_ONLY): {missing}"
    stale = sorted({owner for path, (owner, _) in leaves.items() if path in carried} & CORE_ONLY)
    assert not stale, f"listed in CORE_ONLY, yet a setting reaches them: {stale}"


def test_no_settings_default_is_declared_a_second_time() -> None:
    """A group field the core uses takes its default from the core config; only a literal could drift from it."""
    groups = {model.__name__: group for group, model in _groups().items()}
    twice = []
    for node in ast.walk(ast.parse(SETTINGS_PY.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ClassDef) or node.name not in groups:
            continue
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and statement.value is not None:
                setting = f"{groups[node.name]}.{ast.unparse(statement.target)}"
                literal = not any(isinstance(n, ast.Name) for n in ast.walk(statement.value))
                if literal and setting not in NOT_FOR_THE_CORE:
                    twice.append(f"{setting} = {ast.unparse(statement.value)}")
    assert not twice, f"defaults written again in processors/settings.py (take them from the core config): {twice}"


def test_core_configs_are_built_by_keyword_only() -> None:
    configs = {EngineConfig, FleetConfig, Limits}
    for config in (EngineConfig(), FleetConfig()):
        configs |= {type(getattr(config, f.name)) for f in dataclasses.fields(config)}
    configs |= {type(EngineConfig().guarding.guard), type(EngineConfig().limits.global_limits)}
    positional = sorted(c.__name__ for c in configs if not all(f.kw_only for f in dataclasses.fields(c)))
    assert not positional, f"configs that accept positional arguments (a reordered field breaks silently): {positional}"


def test_standby_replicas_reach_the_faust_app(tmp_path: Path) -> None:
    """Each state partition's standby copies are the operator's choice: none by default (a standby spends CPU
    applying its partition's every state record and shortens no takeover), one when asked."""
    default = wire(ProcessorSettings(bootstrap_servers="127.0.0.1:1", data_dir=tmp_path))
    one = wire(ProcessorSettings(bootstrap_servers="127.0.0.1:1", data_dir=tmp_path, standby_replicas=1))
    assert (default.app.conf.table_standby_replicas, one.app.conf.table_standby_replicas) == (0, 1)
