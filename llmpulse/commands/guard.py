"""``llmpulse guard check``: run the text guardrails on texts read one per line from stdin.

The verdicts come from ``TextGuard.check_batch`` (each line checked as both prompt and response, exactly as
``TextGuard.check`` does), so the command shows what the stream processors decide.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import numpy as np
import typer

from llmpulse.processors.core.guards.guard import GuardConfig, GuardResult, TextGuard
from llmpulse.processors.loaders import read_injection_model


def _as_json(text: str, result: GuardResult) -> str:
    row: dict[str, Any] = {"text": text, **result._asdict()}
    row["injection_score"] = round(result.injection_score, 4)
    return json.dumps(row, ensure_ascii=False)


def _table(texts: list[str], results: list[GuardResult]) -> Any:
    from rich.table import Table

    table = Table("text", "injection", "score", "patterns", "pii", "hallucination", "toxic", "too long")
    for text, r in zip(texts, results, strict=True):
        table.add_row(
            text if len(text) <= 60 else text[:57] + "...",
            "[red]yes[/red]" if r.injection else "no",
            f"{r.injection_score:.2f}",
            ", ".join(r.injection_patterns),
            ", ".join(r.pii),
            r.hallucination_level + (f" ({', '.join(r.domains)})" if r.domains else ""),
            "[red]yes[/red]" if r.toxic else "no",
            "yes" if r.too_long else "no",
        )
    return table


def check(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input line.")] = False,
    threshold: Annotated[float, typer.Option(help="Injection score threshold.")] = GuardConfig().injection_threshold,
) -> None:
    """Check texts read one per line from stdin; print a table, or JSON lines with --json."""
    texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    guard = TextGuard(GuardConfig(injection_threshold=threshold), read_injection_model())
    column = np.empty(len(texts), dtype=object)
    column[:] = texts
    batch = guard.check_batch(column, column)
    results = [batch.row(i) for i in range(len(texts))]
    if as_json:
        for text, result in zip(texts, results, strict=True):
            typer.echo(_as_json(text, result))
        return
    from rich.console import Console

    Console().print(_table(texts, results))


def register(app: typer.Typer) -> None:
    guard_app = typer.Typer(help="Text guardrails: prompt injection, PII, hallucination risk, toxicity.")
    guard_app.command("check")(check)
    app.add_typer(guard_app, name="guard")
