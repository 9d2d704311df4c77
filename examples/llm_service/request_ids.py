"""Request and trace ids: taken from the caller's headers or made here, on every log line and every llm_call.

* ``X-Request-ID``: the caller's, when it is a short token, else a new one; echoed in the response.
* ``traceparent`` (W3C Trace Context): its trace id, else a new one; the service's own span id is new. They go
  into the llm_call fields ``trace_id`` and ``span_id``, so a call on the Kafka topic leads back to the trace.

The ids of the request in flight and the call being made (its feature and attempt number) live in contextvars;
:class:`TaggedRecorder` adds them to each call the instrumented client records (``labels["request_id"]``,
``labels["attempt"]``: the llm_call schema has no field of its own for either), without changing the call.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("llm_service")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_INVALID_TRACE, _INVALID_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class RequestIds:
    request_id: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits: this service's span of the trace

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RequestIds:
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(8).hex()
        parent = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip().lower())
        trace_id = parent.group(1) if parent and parent.group(1) != _INVALID_TRACE else os.urandom(16).hex()
        span_id = os.urandom(8).hex()
        while span_id == _INVALID_SPAN:
            span_id = os.urandom(8).hex()
        return cls(request_id, trace_id, span_id)

    def log_fields(self) -> dict[str, str]:
        return {"request_id": self.request_id, "trace_id": self.trace_id}


_CURRENT: ContextVar[RequestIds | None] = ContextVar("llm_service_request", default=None)
_CALL: ContextVar[tuple[str, int] | None] = ContextVar("llm_service_call", default=None)  # (feature, attempt)


@contextmanager
def current_request(ids: RequestIds) -> Iterator[RequestIds]:
    token = _CURRENT.set(ids)
    try:
        yield ids
    finally:
        _CURRENT.reset(token)


def request_ids() -> RequestIds | None:
    """The ids of the request in flight, if any."""
    return _CURRENT.get()


@contextmanager
def current_call(feature: str, attempt: int) -> Iterator[None]:
    token = _CALL.set((feature, attempt))
    try:
        yield
    finally:
        _CALL.reset(token)


def request_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` of an llm_call plus the ids of the request in flight, the call's feature and attempt number."""
    ids, call = _CURRENT.get(), _CALL.get()
    if ids is None and call is None:
        return fields
    labels = dict(fields.get("labels") or {})
    if ids is not None:
        fields.setdefault("trace_id", ids.trace_id)
        fields.setdefault("span_id", ids.span_id)
        labels.setdefault("request_id", ids.request_id)
    if call is not None:
        fields["feature"] = call[0]
        labels.setdefault("attempt", str(call[1]))
    fields["labels"] = labels
    return fields


class TaggedRecorder:
    """The Pulse as the instrumented client sees it: ``record`` adds :func:`request_fields`; everything else
    (``preflight``, ``settings``) is the Pulse's own."""

    __slots__ = ("_pulse",)

    def __init__(self, pulse: Any) -> None:
        self._pulse = pulse

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pulse, name)

    def record(self, **fields: Any) -> Any:
        try:
            fields = request_fields(fields)
        except Exception:  # telemetry must never break the call: record it untagged
            log.debug("tagging an llm_call failed", exc_info=True)
        return self._pulse.record(**fields)
