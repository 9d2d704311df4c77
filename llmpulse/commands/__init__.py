"""CLI sub-commands. Each module exposes ``register(app)``; add new modules to ``_MODULES``."""

from __future__ import annotations

import importlib

import typer

_MODULES = ("broker", "worker", "simulate", "alerts", "forward", "guard", "report", "interop")


def register_all(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not built yet in this checkout
            raise
        module.register(app)
