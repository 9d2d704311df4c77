"""CLI sub-commands. Each module exposes ``register(app)``; add new modules to ``_MODULES``."""

from __future__ import annotations

import importlib

import typer

_MODULES = ("broker", "acls", "worker", "simulate", "alerts", "forward", "dead_letter", "guard", "report", "interop")


def register_all(app: typer.Typer) -> None:
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app)
