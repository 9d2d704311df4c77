"""JSON records on the calls topic: one ``llm_call`` object, or an array of them, for producers that write neither
Avro nor OpenTelemetry (a shell script with kcat, a language without an Avro library).

Field names, types and defaults are the ``llm_call`` contract's (schemas/llm_call.v1.avsc): each object is checked
against that schema, field by field, so ``"latency_ms": "fast"`` or a misspelt field name refuses that one call
with the reason, never its neighbours. Accepted calls are packed into the batch layout and take the same columnar
path, limits and dead-letter reasons as Avro records (wire/calls.py).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import fastavro
from fastavro.validation import ValidationError, validate

from llmpulse import schemas
from llmpulse.schemas.single_object import DecodeError

_WHITESPACE = b" \t\r\n"


def looks_like_json(data: bytes) -> bool:
    """JSON starts with ``{`` or ``[``; Avro single-object records start with 0xC3 and registry framing with 0x00."""
    return data.lstrip(_WHITESPACE)[:1] in (b"{", b"[")


class ParsedCalls(NamedTuple):
    rows: list[dict[str, Any]]  # llm_call dicts that fit the schema, defaults filled
    positions: list[int]  # each row's index in the record (an array's position; 0 for a single object)
    refused: list[tuple[int, str, bytes]]  # (position, reason, the call's own JSON) of the calls that do not


class JsonCalls:
    """Parses and schema-checks JSON calls; the contract is parsed once."""

    def __init__(self, max_calls_per_batch: int) -> None:
        self.max_calls_per_batch = max_calls_per_batch
        raw = schemas.raw(schemas.LLM_CALL)
        self._schema = fastavro.parse_schema(raw)
        self._defaults = {spec["name"]: spec["default"] for spec in raw["fields"] if "default" in spec}
        self._names = tuple(spec["name"] for spec in raw["fields"])
        self._required = tuple(name for name in self._names if name not in self._defaults)
        self._known = frozenset(self._names)

    def parse(self, data: bytes) -> ParsedCalls:
        """The calls of one record; DecodeError (``corrupt_json``, ``invalid_batch``) when the record as a whole is
        unreadable, per-call reasons in ``refused`` otherwise."""
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError("corrupt_json", f"not valid JSON: {exc}") from None
        items = value if isinstance(value, list) else [value]
        if not 0 < len(items) <= self.max_calls_per_batch:
            raise DecodeError("invalid_batch", f"JSON array of {len(items)} calls not in 1..{self.max_calls_per_batch}")
        parsed = ParsedCalls([], [], [])
        for position, item in enumerate(items):
            row, reason = self._checked(item)
            if reason is None:
                parsed.rows.append(row)
                parsed.positions.append(position)
            else:
                parsed.refused.append((position, reason, json.dumps(item, default=str).encode()))
        return parsed

    def _checked(self, item: Any) -> tuple[dict[str, Any], str | None]:
        if not isinstance(item, dict):
            return {}, f"a call must be a JSON object, not {type(item).__name__}"
        unknown = item.keys() - self._known
        if unknown:
            return {}, f"unknown field(s) {', '.join(sorted(unknown))} (llm_call has no such field)"
        missing = [name for name in self._required if name not in item]
        if missing:
            return {}, f"missing required field(s) {', '.join(missing)}"
        defaults = self._defaults
        row = {name: item[name] if name in item else defaults[name] for name in self._names}
        try:
            validate(row, self._schema, raise_errors=True)
        except ValidationError as exc:
            return {}, f"does not fit the llm_call schema: {_first_problem(exc)}"
        return row, None


def _first_problem(exc: ValidationError) -> str:
    """fastavro lists every failing path; the first names the field an operator must fix."""
    errors = getattr(exc, "errors", None) or [str(exc)]
    return str(errors[0]).replace("io.llmpulse.LlmCall.", "", 1)[:300]
