"""A circuit breaker for calls to one LLM provider/model: CLOSED -> OPEN -> HALF_OPEN -> CLOSED.

Shared by both sides, so pure Python (standard library only): the SDK (base install, no numpy) guards live
calls with it (``producers/router.py``), and the processors replay the same state machine over the stream with
event time as the clock (``processors/core/circuit.py``).

Rules (defaults in parentheses):

* CLOSED opens after ``failure_threshold`` (5) consecutive failures, or when the error rate over the last
  ``window_size`` (20) outcomes reaches ``error_rate_threshold`` (0.5), once at least ``min_calls`` (10) are
  in the window, so a single early failure cannot trip it.
* OPEN refuses calls (``allow()`` is False) and ignores outcomes; ``open_seconds`` (30) after opening it is
  HALF_OPEN. The move happens lazily, when the state is next read, and is stamped with the logical time
  ``opened_at + open_seconds``.
* HALF_OPEN lets ``half_open_max_calls`` (1) trial calls through at a time; ``success_threshold`` (2)
  consecutive successes close it, any failure reopens it. A trial permit whose outcome never arrives (the
  caller crashed) expires after ``open_seconds`` so the breaker cannot stay stuck half-open.

Thread-safe: one lock guards all state. Transition callbacks run after the lock is released and can never
raise into the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

CLOSED = "CLOSED"
OPEN = "OPEN"
HALF_OPEN = "HALF_OPEN"
STATES: tuple[str, ...] = (CLOSED, OPEN, HALF_OPEN)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    failure_threshold: int = 5
    error_rate_threshold: float = 0.5
    window_size: int = 20
    min_calls: int = 10
    open_seconds: float = 30.0
    success_threshold: int = 2
    half_open_max_calls: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1 or self.half_open_max_calls < 1:
            raise ValueError("thresholds and half_open_max_calls must be >= 1")
        if not 0.0 < self.error_rate_threshold <= 1.0:
            raise ValueError("error_rate_threshold must be in (0, 1]")
        if not 1 <= self.min_calls <= self.window_size:
            raise ValueError("need 1 <= min_calls <= window_size")
        if self.open_seconds < 0:
            raise ValueError("open_seconds must be >= 0")


class Transition(NamedTuple):
    """One state change; ``at`` is on the breaker's clock (seconds)."""

    previous: str
    state: str
    at: float
    reason: str
    error_rate: float
    consecutive_failures: int


TransitionCallback = Callable[[Transition], None]


class CircuitBreaker:
    """State machine guarding one dependency; see the module docstring for the rules."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = CLOSED
        self._window: deque[bool] = deque(maxlen=self.config.window_size)  # True = failure
        self._window_failures = 0
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._opened_at = 0.0
        self._trials: deque[float] = deque()  # issue times of HALF_OPEN permits still awaiting an outcome
        self._pending: list[Transition] = []

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        with self._lock:
            self._advance(self._clock())
        self._notify()
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now. In HALF_OPEN this takes a trial permit."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            allowed = self._allow_locked(now)
        self._notify()
        return allowed

    def record_success(self, count: int = 1) -> None:
        """Record ``count`` successful calls (bulk form for replaying a stream)."""
        with self._lock:
            self._advance(self._clock())
            self._successes_locked(count)
        self._notify()

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            self._advance(now)
            self._failure_locked(now)
        self._notify()

    def snapshot(self) -> dict[str, Any]:
        """Current figures, JSON-able (for health endpoints and the provider-state topic)."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            retry_in = (
                max(0.0, self._opened_at + self.config.open_seconds - now) if self._state == OPEN else 0.0
            )
            snap = {
                "state": self._state,
                "consecutive_failures": self._consecutive_failures,
                "error_rate": self._error_rate(),
                "window_calls": len(self._window),
                "half_open_successes": self._half_open_successes,
                "retry_in_seconds": retry_in,
            }
        self._notify()
        return snap

    def export_state(self) -> dict[str, Any]:
        """Full state for persistence; only meaningful when the clock is persistent too (event time)."""
        with self._lock:
            return {
                "state": self._state,
                "window": [int(failed) for failed in self._window],
                "consecutive_failures": self._consecutive_failures,
                "half_open_successes": self._half_open_successes,
                "opened_at": self._opened_at,
            }

    def restore_state(self, data: dict[str, Any]) -> None:
        with self._lock:
            self._state = str(data["state"])
            self._window.clear()
            self._window.extend(bool(failed) for failed in data["window"])
            self._window_failures = sum(self._window)
            self._consecutive_failures = int(data["consecutive_failures"])
            self._half_open_successes = int(data["half_open_successes"])
            self._opened_at = float(data["opened_at"])
            self._trials.clear()

    # -- state machine (lock held) ------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self._state == OPEN and now >= self._opened_at + self.config.open_seconds:
            self._move(HALF_OPEN, self._opened_at + self.config.open_seconds, "open period elapsed")

    def _allow_locked(self, now: float) -> bool:
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            return False
        while self._trials and now - self._trials[0] >= self.config.open_seconds:
            self._trials.popleft()  # a permit whose outcome never came back
        if len(self._trials) >= self.config.half_open_max_calls:
            return False
        self._trials.append(now)
        return True

    def _successes_locked(self, count: int) -> None:
        while count > 0:
            if self._state == OPEN:
                return  # outcomes of calls let through elsewhere do not shorten the open period
            if self._state == CLOSED:
                self._consecutive_failures = 0
                self._push_outcomes(False, count)
                return
            if self._trials:
                self._trials.popleft()
            self._half_open_successes += 1
            count -= 1
            if self._half_open_successes >= self.config.success_threshold:
                self._move(CLOSED, self._clock(), f"{self._half_open_successes} successes while half-open")

    def _failure_locked(self, now: float) -> None:
        if self._state == OPEN:
            return
        self._consecutive_failures += 1
        if self._state == HALF_OPEN:
            self._trials.clear()
            self._open(now, "failure while half-open")
            return
        self._push_outcomes(True, 1)
        rate = self._error_rate()
        if self._consecutive_failures >= self.config.failure_threshold:
            self._open(now, f"{self._consecutive_failures} consecutive failures")
        elif len(self._window) >= self.config.min_calls and rate >= self.config.error_rate_threshold:
            self._open(now, f"error rate {rate:.2f} over last {len(self._window)} calls")

    def _push_outcomes(self, failed: bool, count: int) -> None:
        maxlen = self.config.window_size
        for _ in range(min(count, maxlen)):  # bounded: at most window_size steps however large count is
            if len(self._window) == maxlen:
                self._window_failures -= self._window[0]
            self._window.append(failed)
            self._window_failures += failed

    def _error_rate(self) -> float:
        return self._window_failures / len(self._window) if self._window else 0.0

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._move(OPEN, now, reason)

    def _move(self, state: str, at: float, reason: str) -> None:
        previous = self._state
        self._pending.append(
            Transition(previous, state, at, reason, self._error_rate(), self._consecutive_failures)
        )
        self._state = state
        self._half_open_successes = 0
        if state == CLOSED:
            # A fresh start: history from before the outage must not reopen the circuit.
            self._window.clear()
            self._window_failures = 0
            self._consecutive_failures = 0
            self._trials.clear()

    def _notify(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if self._on_transition is None:
            return
        for transition in pending:
            try:
                self._on_transition(transition)
            except Exception:  # a listener bug must never break the guarded call
                log.exception("circuit breaker transition callback failed")
