"""``Pulse.track(...)``: time a call and classify its outcome without changing what the caller sees."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmpulse.producers.batching import new_event_id

if TYPE_CHECKING:
    from llmpulse.producers.client import Pulse


def classify_error(exc: BaseException) -> tuple[str, str]:
    """(status, error_type) for an exception raised by an LLM client, judged by name and HTTP status."""
    name = type(exc).__name__
    status_code = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    lowered = name.lower()
    if "ratelimit" in lowered or status_code == 429:
        return "rate_limited", name
    if "timeout" in lowered or isinstance(exc, TimeoutError) or status_code in (408, 504):
        return "timeout", name
    if "contentfilter" in lowered or "safety" in lowered:
        return "filtered", name
    return "error", name if status_code is None else f"{name}:{status_code}"


class CallTracker:
    """Collects one call's fields; set attributes or call ``set_usage`` inside the ``with`` block."""

    __slots__ = ("_first_token", "_pulse", "_start", "fields")

    def __init__(self, pulse: Pulse, **fields: Any) -> None:
        self._pulse = pulse
        self.fields = fields
        self._start = 0.0
        self._first_token: float | None = None

    def __enter__(self) -> CallTracker:
        self._start = time.perf_counter()
        return self

    @property
    def request_id(self) -> str:
        """The call's event_id, fixed now so feedback can name it (``pulse.feedback(call.request_id, ...)``)."""
        return str(self.fields.setdefault("event_id", new_event_id()))

    def set_usage(self, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0) -> None:
        self.fields.update(input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens)

    def first_token(self) -> None:
        """Mark the arrival of the first streamed token (time to first token)."""
        if self._first_token is None:
            self._first_token = time.perf_counter()

    def set(self, **fields: Any) -> None:
        """Any llm_call field: response_model, confidence, no_answer, cache_hit, prompt_text, ..."""
        self.fields.update(fields)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            end = time.perf_counter()
            self.fields["latency_ms"] = (end - self._start) * 1000.0
            if self._first_token is not None:
                self.fields["ttft_ms"] = (self._first_token - self._start) * 1000.0
            if exc is not None:
                status, error_type = classify_error(exc)
                self.fields.setdefault("status", status)
                self.fields.setdefault("error_type", error_type)
            self._pulse.record(**self.fields)
        except Exception:  # never replace the caller's exception or result with ours
            pass
        return False  # re-raise the caller's exception untouched
