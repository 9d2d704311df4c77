"""Retries with exponential backoff for the LLM calls that failed for a passing reason.

The OpenAI client's own retries are off (``max_retries=0``): they would be invisible, inside one recorded call.
Here each attempt is a call of its own, so the instrumented client records one llm_call per attempt, labelled
with its number (``labels["attempt"]``, see request_ids.py), and each attempt can fail over to another model.
"""

from __future__ import annotations

from dataclasses import dataclass

from openai import APIConnectionError, APIError

from llmpulse.backoff import Backoff

RETRYABLE_STATUS = frozenset({408, 409, 429})  # timeout, conflict, rate limited; and every 5xx


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy(Backoff):
    """llmpulse's capped exponential backoff (``delay_s(attempt, retry_after_s)``) with this service's numbers:
    0.5 s, 1 s, 2 s ... at most 8 s, each less up to 20 % at random; a provider's Retry-After is honoured up to
    the cap."""

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.2


def retryable(exc: BaseException) -> bool:
    """A failure another attempt may not meet: no connection, a timeout, rate limiting or a server error."""
    if isinstance(exc, APIConnectionError):  # includes APITimeoutError
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, APIError) and isinstance(status, int) and (status in RETRYABLE_STATUS or status >= 500)


def retry_after_s(exc: BaseException) -> float | None:
    """The provider's Retry-After, in seconds, when it sent one as a number."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
