"""OTLP trace records (what the OpenTelemetry Collector's Kafka exporter writes) -> CallColumns + Refused.

One Kafka record is one ``ExportTraceServiceRequest``: protobuf bytes (``otlp_proto``, the exporter's default) or
its OTLP/JSON form (``otlp_json``). Spans that describe a model call by the OpenTelemetry GenAI semantic
conventions become calls (docs/schemas.md has the mapping table); every other span is skipped after one pass over
its attributes and counted. The whole request becomes one CallColumns: each span appends to plain column lists,
which become numpy arrays once, so the only per-span objects are the ones protobuf or JSON parsing makes.

Both generations of the conventions are read: ``gen_ai.provider.name`` or the older ``gen_ai.system``,
``gen_ai.usage.input_tokens``/``output_tokens`` or the older ``prompt_tokens``/``completion_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpulse.processors.core.columns import (
    ERROR,
    FILTERED,
    NO_COST,
    OK,
    RATE_LIMITED,
    TIMEOUT,
    CallColumns,
)
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import RecordReader, Refused, Unchecked
from llmpulse.schemas.single_object import DecodeError

ENCODINGS = ("otlp_proto", "otlp_json")
UNKNOWN_SERVICE = "unknown_service"  # the OpenTelemetry SDKs' own default when service.name is not set
# gen_ai.operation.name values that are not a model call (agents, tools, retrieval): skipped, so an agent span
# around its model calls does not count their tokens twice.
NOT_MODEL_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "retrieval"})
# Span events whose time marks the first token; the semconv attribute gen_ai.response.time_to_first_chunk wins.
FIRST_TOKEN_EVENTS = frozenset({"gen_ai.first_token", "first_token"})
STATUS_CODE_ERROR = 2  # Span.Status.code: 0 unset, 1 ok, 2 error

# Attribute -> slot in a span's found-values dict. Two names in one slot (the newer and the older semconv name):
# a span carries one of them, and if it carries both the first in its attribute order is kept.
_OPERATION, _PROVIDER, _MODEL, _RESPONSE_MODEL, _INPUT, _OUTPUT = range(6)
_CACHED, _ERROR_TYPE, _FINISH, _SERVER, _TTFT = range(6, 11)
_SEMCONV: dict[str, int] = {
    "gen_ai.operation.name": _OPERATION,
    "gen_ai.provider.name": _PROVIDER,
    "gen_ai.system": _PROVIDER,
    "gen_ai.request.model": _MODEL,
    "gen_ai.response.model": _RESPONSE_MODEL,
    "gen_ai.usage.input_tokens": _INPUT,
    "gen_ai.usage.prompt_tokens": _INPUT,
    "gen_ai.usage.output_tokens": _OUTPUT,
    "gen_ai.usage.completion_tokens": _OUTPUT,
    "gen_ai.usage.cache_read.input_tokens": _CACHED,
    "error.type": _ERROR_TYPE,
    "gen_ai.response.finish_reasons": _FINISH,
    "server.address": _SERVER,
    "gen_ai.response.time_to_first_chunk": _TTFT,  # seconds
    "gen_ai.server.time_to_first_token": _TTFT,  # seconds (OpenLIT)
}
_USER, _EXPERIMENT, _VARIANT = 100, 101, 102


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanMapping:
    """Which span attributes carry what the GenAI conventions do not define. User ids are hashed (sha256, 16 hex
    characters) before they leave the decoder, as ``user_hash`` is everywhere else."""

    user_attributes: tuple[str, ...] = ("user.id", "enduser.id")
    experiment_attribute: str = "llmpulse.experiment_id"
    variant_attribute: str = "llmpulse.variant"

    def slots(self) -> dict[str, int]:
        extra = {name: _USER for name in self.user_attributes}
        extra.update({self.experiment_attribute: _EXPERIMENT, self.variant_attribute: _VARIANT})
        return {**_SEMCONV, **extra}


class SpanCounts:
    """Spans of one request that did not become calls, by reason (the worker's Prometheus counter)."""

    __slots__ = ("not_genai", "not_model_call")

    def __init__(self) -> None:
        self.not_genai = 0
        self.not_model_call = 0


class _Columns:
    """Column lists of the calls of one request, filled span by span."""

    def __init__(self) -> None:
        self.timestamp_ms: list[int] = []
        self.latency_ms: list[float] = []
        self.ttft_ms: list[float] = []
        self.status: list[int] = []
        self.tokens: list[tuple[int, int, int]] = []
        self.error_type: list[str | None] = []
        self.user: list[str | None] = []
        self.experiment: list[str | None] = []
        self.variant: list[str | None] = []
        self.event_id: list[str] = []
        self.names: dict[str, list[int]] = {"service": [], "provider": [], "model": []}
        self.dictionaries: dict[str, dict[str | None, int]] = {name: {} for name in self.names}
        self._hashed: dict[str, str] = {}
        self.skipped = SpanCounts()

    def add(self, service: str, found: dict[int, Any], start_ns: int, end_ns: int, status_code: int,
            first_token_ns: int | None, event_id: str) -> None:
        operation = found.get(_OPERATION)
        provider = found.get(_PROVIDER)
        if operation is None and provider is None:
            self.skipped.not_genai += 1
            return
        if operation in NOT_MODEL_CALLS:
            self.skipped.not_model_call += 1
            return
        self._name("service", service)
        self._name("provider", _text(provider or found.get(_SERVER)))
        self._name("model", _text(found.get(_MODEL) or found.get(_RESPONSE_MODEL)))
        self.timestamp_ms.append(end_ns // 1_000_000)
        latency_ms = (end_ns - start_ns) / 1e6
        self.latency_ms.append(latency_ms)
        ttft = found.get(_TTFT)
        if isinstance(ttft, (int, float)) and not isinstance(ttft, bool):
            self.ttft_ms.append(float(ttft) * 1000.0)
        else:
            self.ttft_ms.append((first_token_ns - start_ns) / 1e6 if first_token_ns is not None else np.nan)
        error_type = _text(found.get(_ERROR_TYPE))
        self.status.append(_status(status_code, error_type, found.get(_FINISH)))
        if error_type is None and status_code == STATUS_CODE_ERROR:
            error_type = "_OTHER"  # semconv's value for an error of no known type
        self.error_type.append(error_type)
        self.tokens.append((_count(found.get(_INPUT)), _count(found.get(_OUTPUT)), _count(found.get(_CACHED))))
        self.user.append(self._hash(found.get(_USER)))
        self.experiment.append(_text(found.get(_EXPERIMENT)))
        self.variant.append(_text(found.get(_VARIANT)))
        self.event_id.append(event_id)

    def _name(self, column: str, value: str | None) -> None:
        index = self.dictionaries[column]
        self.names[column].append(-1 if value is None else index.setdefault(value, len(index)))

    def _hash(self, value: Any) -> str | None:
        if value is None:
            return None
        text = str(value)
        hashed = self._hashed.get(text)
        if hashed is None:
            hashed = self._hashed[text] = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
        return hashed

    def __len__(self) -> int:
        return len(self.event_id)

    def columns(self) -> CallColumns:
        count = len(self)
        codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        arrays: dict[str, np.ndarray] = {}
        for name, column in self.names.items():
            values = np.empty(len(self.dictionaries[name]) + 1, dtype=object)
            values[:-1] = list(self.dictionaries[name])  # the extra last slot is None, which code -1 selects
            codes[name] = (np.array(column, dtype=np.int32), values)
            arrays[name] = values[codes[name][0]]
        tokens = np.array(self.tokens, dtype=np.int64).reshape(count, 3)
        nothing = np.full(count, None, dtype=object)
        return CallColumns(
            timestamp_ms=np.array(self.timestamp_ms, dtype=np.int64), **arrays,
            status=np.array(self.status, dtype=np.int8),
            latency_ms=np.array(self.latency_ms, dtype=np.float64),
            ttft_ms=np.array(self.ttft_ms, dtype=np.float64),
            input_tokens=tokens[:, 0], output_tokens=tokens[:, 1], cached_tokens=tokens[:, 2],
            cost_micros=np.full(count, NO_COST, dtype=np.int64),
            confidence=np.full(count, np.nan), cache_hit=np.zeros(count, dtype=bool),
            no_answer=np.zeros(count, dtype=bool), error_type=_objects(self.error_type),
            user_hash=_objects(self.user), experiment_id=_objects(self.experiment), variant=_objects(self.variant),
            feature=nothing, prompt_text=nothing, response_text=nothing, event_id=_objects(self.event_id),
            codes=codes,
        )

    def row(self, index: int, calls: CallColumns) -> bytes:
        """Call ``index`` as JSON (the dead-letter payload of a span that maps to an invalid call)."""
        row = {name: _plain(getattr(calls, name)[index]) for name in (
            "event_id", "timestamp_ms", "service", "provider", "model", "status", "error_type", "latency_ms",
            "ttft_ms", "input_tokens", "output_tokens", "cached_tokens", "user_hash", "experiment_id", "variant")}
        return json.dumps(row, default=str).encode()


class OtlpDecoder(RecordReader):
    """Stateless per record; the attribute table is built once from the mapping."""

    def __init__(self, limits: Limits, max_record_bytes: int, encoding: str, mapping: SpanMapping,
                 on_skipped: Callable[[SpanCounts], None] | None = None) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"OTLP encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
        self.limits = limits
        self.max_record_bytes = max_record_bytes
        self.encoding = encoding
        self._slots = mapping.slots()
        self._on_skipped = on_skipped
        self._walk = self._walk_proto if encoding == "otlp_proto" else self._walk_json
        if encoding == "otlp_proto":
            try:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError("reading otlp_proto needs the [otlp] extra: pip install 'llmpulse[otlp]'") from exc
            self._request = ExportTraceServiceRequest

    def read(self, data: bytes) -> Unchecked:
        if len(data) > self.max_record_bytes:
            return Unchecked(None, [Refused("oversized", f"record of {len(data)} bytes exceeds {self.max_record_bytes}",
                                            data)])
        out = _Columns()
        try:
            self._walk(data, out)
        except DecodeError as exc:
            return Unchecked(None, [Refused(exc.code, str(exc), data)])
        if self._on_skipped is not None and (out.skipped.not_genai or out.skipped.not_model_call):
            self._on_skipped(out.skipped)
        if not len(out):
            return Unchecked(None)
        calls = out.columns()
        return Unchecked(calls, payload_of=lambda index: out.row(index, calls))

    # ---- otlp_proto ------------------------------------------------------------------------------------
    def _walk_proto(self, data: bytes, out: _Columns) -> None:
        try:
            request = self._request.FromString(data)
        except Exception as exc:  # google.protobuf.message.DecodeError, or worse on hostile bytes
            raise DecodeError("corrupt_otlp", f"not an OTLP ExportTraceServiceRequest (protobuf): {exc}") from None
        slots = self._slots
        for resource_spans in request.resource_spans:
            service = UNKNOWN_SERVICE
            for kv in resource_spans.resource.attributes:
                if kv.key == "service.name":
                    service = kv.value.string_value or UNKNOWN_SERVICE
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found: dict[int, Any] = {}
                    for kv in span.attributes:
                        slot = slots.get(kv.key)
                        if slot is not None and slot not in found:
                            found[slot] = _proto_value(kv.value)
                    first_token = None
                    if span.events and _TTFT not in found:
                        first_token = next((e.time_unix_nano for e in span.events if e.name in FIRST_TOKEN_EVENTS),
                                           None)
                    out.add(service, found, span.start_time_unix_nano, span.end_time_unix_nano, span.status.code,
                            first_token, span.trace_id.hex() + span.span_id.hex())

    # ---- otlp_json -------------------------------------------------------------------------------------
    def _walk_json(self, data: bytes, out: _Columns) -> None:
        try:
            request = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError("corrupt_json", f"not valid JSON: {exc}") from None
        try:
            self._walk_json_request(request, out)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise DecodeError("corrupt_otlp", f"not an OTLP/JSON ExportTraceServiceRequest: "
                                              f"{type(exc).__name__}: {exc}") from None

    def _walk_json_request(self, request: dict[str, Any], out: _Columns) -> None:
        if not isinstance(request, dict) or not isinstance(request.get("resourceSpans", []), list):
            raise ValueError("expected an object with a resourceSpans array")
        slots = self._slots
        for resource_spans in request.get("resourceSpans", ()):
            service = UNKNOWN_SERVICE
            for kv in (resource_spans.get("resource") or {}).get("attributes", ()):
                if kv["key"] == "service.name":
                    service = kv["value"].get("stringValue") or UNKNOWN_SERVICE
            for scope_spans in resource_spans.get("scopeSpans", ()):
                for span in scope_spans.get("spans", ()):
                    found: dict[int, Any] = {}
                    for kv in span.get("attributes", ()):
                        slot = slots.get(kv["key"])
                        if slot is not None and slot not in found:
                            found[slot] = _json_value(kv["value"])
                    first_token = None
                    events = span.get("events")
                    if events and _TTFT not in found:
                        first_token = next((int(e["timeUnixNano"]) for e in events
                                            if e.get("name") in FIRST_TOKEN_EVENTS), None)
                    out.add(service, found, int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"]),
                            _json_status(span.get("status")), first_token,
                            str(span.get("traceId", "")) + str(span.get("spanId", "")))


def _proto_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_proto_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return None
    return getattr(value, kind)


def _json_value(value: dict[str, Any]) -> Any:
    for kind, item in value.items():
        if kind == "intValue":
            return int(item)
        if kind == "arrayValue":
            return [_json_value(v) for v in (item or {}).get("values", ())]
        if kind == "kvlistValue":
            return None
        return item
    return None


_JSON_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _json_status(status: dict[str, Any] | None) -> int:
    code = (status or {}).get("code", 0)
    return _JSON_STATUS.get(code, 0) if isinstance(code, str) else int(code)


def _status(status_code: int, error_type: str | None, finish_reasons: Any) -> int:
    """The llm_call status of a span: timeouts and rate limits by error.type, filtered by finish reason."""
    if error_type is None and status_code != STATUS_CODE_ERROR:
        if isinstance(finish_reasons, list) and "content_filter" in finish_reasons:
            return FILTERED
        return OK
    kind = (error_type or "").lower().replace("_", "")
    if "timeout" in kind or kind == "408":
        return TIMEOUT
    if "ratelimit" in kind or kind == "429":
        return RATE_LIMITED
    if "contentfilter" in kind:
        return FILTERED
    return ERROR


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _count(value: Any) -> int:
    """A token count; -1 (refused by validation with the field's name) when it is not a number."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else -1
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _objects(values: Iterable[Any]) -> np.ndarray:
    column = list(values)
    array = np.empty(len(column), dtype=object)
    array[:] = column
    return array


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
