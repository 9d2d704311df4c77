"""Capped exponential backoff between attempts, with optional jitter: the one retry schedule of the project.

Shared, so standard library only: the alert forwarder (``processors/forwarding.py``) retries its HTTP POSTs with
it, and the example service (``examples/llm_service/retries.py``) its LLM calls. Each user declares its own
numbers in a subclass; this module picks none but the doubling and the jitter, which is off by default.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Attempt ``n`` (from 1) that failed waits ``min(max_delay_s, base_delay_s * multiplier ** (n - 1))``, less up
    to ``jitter`` of it at random so that clients that failed together do not retry together."""

    max_attempts: int  # tries in all, the first included
    base_delay_s: float
    multiplier: float = 2.0
    max_delay_s: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_s < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid retry policy: {self}")

    def delay_s(self, attempt: int, retry_after_s: float | None = None,
                rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt``; a server's Retry-After is honoured up to the cap."""
        backoff = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))
        if self.jitter:
            backoff *= 1.0 - self.jitter * rand()
        if retry_after_s is not None:
            backoff = max(backoff, min(retry_after_s, self.max_delay_s))
        return backoff
