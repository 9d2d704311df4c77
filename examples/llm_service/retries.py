"""Retries with exponential backoff for the LLM calls that failed for a passing reason.

The OpenAI client's own retries are off (``max_retries=0``): they would be invisible, inside one recorded call.
Here each attempt is a call of its own, so the instrumented client records one llm_call per attempt, labelled
with its number (``labels["attempt"]``, see request_ids.py), and each attempt can fail over to another model.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from openai import APIConnectionError, APIError

RETRYABLE_STATUS = frozenset({408, 409, 429})  # timeout, conflict, rate limited; and every 5xx


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempt ``n`` (from 1) that failed waits ``min(max_delay_s, base_delay_s * multiplier ** (n - 1))``, less up
    to ``jitter`` of it at random so that clients that failed together do not retry together."""

    max_attempts: int = 3
    base_delay_s: float = 0.5
    multiplier: float = 2.0
    max_delay_s: float = 8.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid retry policy: {self}")

    def delay_s(self, attempt: int, retry_after_s: float | None = None,
                rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt``; a provider's Retry-After is honoured up to the cap."""
        backoff = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))
        backoff *= 1.0 - self.jitter * rand()
        if retry_after_s is not None:
            backoff = max(backoff, min(retry_after_s, self.max_delay_s))
        return backoff


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
