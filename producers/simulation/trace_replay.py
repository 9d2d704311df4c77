"""Read request traces for replay and for fitting the traffic model.

Three formats, told apart by the first meaningful line:

- Azure LLM inference CSV (Splitwise, 2023): header ``TIMESTAMP,ContextTokens,GeneratedTokens``, timestamps
  ``YYYY-MM-DD HH:MM:SS.fffffff`` without a timezone;
- Mooncake JSON Lines: ``{"timestamp": ms since start, "input_length": n, "output_length": n, "hash_ids": [...]}``;
- JSON Lines of ``llm_call`` dicts (fields of schemas/llm_call.v1.avsc, e.g. a capture of real traffic).

A malformed line is skipped and counted, never raised: one bad row must not cost a one-hour replay.
Arrivals are returned as milliseconds from the first request, sorted, so a replay only has to add a start time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

AZURE_CSV, MOONCAKE_JSONL, LLM_CALL_JSONL = "azure-csv", "mooncake-jsonl", "llm-call-jsonl"
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_CALL_FIELDS = ("request_model", "input_tokens", "latency_ms")


@dataclass(slots=True)
class Trace:
    """Parallel lists, one entry per request, sorted by arrival."""

    path: str
    format: str
    offsets_ms: list[float] = field(default_factory=list)  # from the first request
    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # llm_call format only
    prefix_blocks: list[list[int]] = field(default_factory=list)  # Mooncake hash_ids, when asked for
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.offsets_ms)

    @property
    def span_s(self) -> float:
        return (self.offsets_ms[-1] / 1000.0) if self.offsets_ms else 0.0


def detect_format(path: str | Path) -> str:
    """The trace format of ``path`` from its first non-empty line; ValueError when it is none of ours."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip().lstrip("\ufeff")
            if not line:
                continue
            if tuple(part.strip() for part in line.split(",")) == AZURE_HEADER:
                return AZURE_CSV
            try:
                row = json.loads(line)
            except ValueError:
                break
            if isinstance(row, dict) and "input_length" in row:
                return MOONCAKE_JSONL
            if isinstance(row, dict) and any(name in row for name in _CALL_FIELDS):
                return LLM_CALL_JSONL
            break
    raise ValueError(f"{path}: not an Azure CSV, Mooncake JSONL or llm_call JSONL trace")


def read_trace(path: str | Path, limit: int | None = None, keep_blocks: bool = False) -> Trace:
    """Parse a whole trace (up to ``limit`` requests); malformed rows are counted in ``skipped``."""
    kind = detect_format(path)
    trace = Trace(path=str(path), format=kind)
    readers = {AZURE_CSV: _azure_rows, MOONCAKE_JSONL: _mooncake_rows, LLM_CALL_JSONL: _call_rows}
    times: list[float] = []
    for row in readers[kind](path, trace, keep_blocks):
        if row is None:
            trace.skipped += 1
            continue
        times.append(row[0])
        trace.input_tokens.append(row[1])
        trace.output_tokens.append(row[2])
        if limit is not None and len(times) >= limit:
            break
    _sort_and_rebase(trace, times)
    return trace


_Row = tuple[float, int, int] | None


def _tokens(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("negative token count")
    return number


def _azure_rows(path: str | Path, _trace: Trace, _keep_blocks: bool) -> Iterator[_Row]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # header, checked by detect_format
        for record in reader:
            if not record or not any(cell.strip() for cell in record):
                continue
            try:
                stamp, context, generated = record
                # 3.11's fromisoformat reads the 7 fractional digits (the 100 ns digit is dropped).
                seconds = datetime.fromisoformat(stamp.strip()).timestamp()
                yield seconds * 1000.0, _tokens(context), _tokens(generated)
            except ValueError:
                yield None


def _json_lines(path: str | Path) -> Iterator[dict[str, Any] | None]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                yield None
                continue
            yield row if isinstance(row, dict) else None


def _mooncake_rows(path: str | Path, trace: Trace, keep_blocks: bool) -> Iterator[_Row]:
    for row in _json_lines(path):
        try:
            parsed = float(row["timestamp"]), _tokens(row["input_length"]), _tokens(row["output_length"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            yield None
            continue
        if keep_blocks:
            trace.prefix_blocks.append(list(row.get("hash_ids") or []))  # type: ignore[union-attr]
        yield parsed


def _call_rows(path: str | Path, trace: Trace, _keep_blocks: bool) -> Iterator[_Row]:
    for row in _json_lines(path):
        try:
            parsed = (
                float(row["timestamp_ms"]),  # type: ignore[index]
                _tokens(row.get("input_tokens", 0)),  # type: ignore[union-attr]
                _tokens(row.get("output_tokens", 0)),  # type: ignore[union-attr]
            )
            if not row.get("provider") or not row.get("request_model"):  # type: ignore[union-attr]
                raise ValueError("provider and request_model are required")
        except (TypeError, KeyError, ValueError):
            yield None
            continue
        trace.calls.append(row)  # type: ignore[arg-type]
        yield parsed


def _sort_and_rebase(trace: Trace, times: list[float]) -> None:
    """Sort by arrival (traces are sorted, captures may not be) and make offsets start at zero."""
    order = sorted(range(len(times)), key=times.__getitem__)
    if order != list(range(len(times))):
        trace.input_tokens = [trace.input_tokens[i] for i in order]
        trace.output_tokens = [trace.output_tokens[i] for i in order]
        if trace.calls:
            trace.calls = [trace.calls[i] for i in order]
        if trace.prefix_blocks:
            trace.prefix_blocks = [trace.prefix_blocks[i] for i in order]
        times = [times[i] for i in order]
    start = times[0] if times else 0.0
    trace.offsets_ms = [t - start for t in times]
    if len(trace.prefix_blocks) > len(times):  # a limit stopped reading after a kept row
        del trace.prefix_blocks[len(times):]
