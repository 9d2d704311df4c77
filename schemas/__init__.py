"""Avro contracts for every llmpulse topic, and the tiny loader that reads them.

Each ``<name>.v<N>.avsc`` file beside this module is one version of one contract. ``load(name)`` returns the
newest version parsed by fastavro; ``all_versions()`` lists every known (name, version, schema) so a reader can
resolve any writer version by fingerprint (see ``codec``).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")

LLM_CALL = "llm_call"
LLM_CALL_BATCH = "llm_call_batch"
ALERT = "alert"
INCIDENT = "incident"
DEAD_LETTER = "dead_letter"
ALERT_COMMAND = "alert_command"
PROVIDER_STATE = "provider_state"
BUDGET_STATE = "budget_state"
FEEDBACK = "feedback"


@cache
def all_versions() -> tuple[tuple[str, int, dict[str, Any]], ...]:
    """Every schema file shipped with the package, as raw JSON dicts, oldest version first."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((match["name"], int(match["version"]), json.loads(entry.read_text())))
    return tuple(sorted(found, key=lambda item: (item[0], item[1])))


def raw(name: str, version: int | None = None) -> dict[str, Any]:
    """The JSON schema of ``name`` at ``version`` (newest when None); KeyError names what exists."""
    versions = [(v, schema) for n, v, schema in all_versions() if n == name]
    if not versions:
        known = sorted({n for n, _, _ in all_versions()})
        raise KeyError(f"no schema named {name!r}; known: {', '.join(known)}")
    if version is None:
        return versions[-1][1]
    for v, schema in versions:
        if v == version:
            return schema
    raise KeyError(f"schema {name!r} has no version {version}; known: {[v for v, _ in versions]}")
