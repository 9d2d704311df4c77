"""Circuit state per (provider, model) as the stream sees it, replaying the SDK's breaker on event time.

The SDK breaks circuits per process; this tracker runs the same state machine
(``llmpulse.circuit_breaker``) over every service's calls, with the events' own timestamps as the
clock, so the provider-state topic and the ``provider_circuit`` alert describe the fleet-wide view and a
replay of the topic reproduces them exactly.

Per batch: calls are grouped by key and each group is replayed in timestamp order. A group that is all ``ok``
on a CLOSED breaker cannot change state, so it is folded in with one bulk call; only groups holding failures
(or keys not CLOSED) are stepped call by call, and within a group consecutive successes are still bulked.
Event time never runs backwards per key: an outcome a little older than its key's clock (up to
``late_tolerance_s``, the disorder of calls within one partition) is applied at the clock; an older one is
*late*, news of a past the breaker has moved on from, and is counted in ``late_outcomes`` instead of replayed.
The fleet stage orders outcomes across partitions before they come here (core/outcome_order.py), so only a
partition running far behind the others delivers late ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpulse.circuit_breaker import CLOSED, OPEN, BreakerConfig, CircuitBreaker, Transition
from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.pricing import factorize

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CircuitTransition:
    """A state change of one provider/model; ``to_record()`` is a provider_state.v1 record."""

    provider: str
    model: str
    previous_state: str
    state: str
    reason: str
    error_rate: float
    consecutive_failures: int
    updated_at_ms: int

    def observation(self, error_rate_threshold: float = 0.5) -> Observation:
        """Rule ``provider_circuit``: ERROR while OPEN or HALF_OPEN, clear once CLOSED again."""
        severity = None if self.state == CLOSED else "ERROR"
        summary = f"{self.provider}/{self.model} circuit {self.state}: {self.reason}"
        labels = (("model", self.model), ("provider", self.provider))
        return Observation(
            "provider_circuit",
            labels,
            severity,
            self.error_rate,
            error_rate_threshold,
            "calls",
            summary,
            self.updated_at_ms,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "state": self.state,
            "reason": self.reason,
            "error_rate": self.error_rate,
            "consecutive_failures": self.consecutive_failures,
            "updated_at_ms": self.updated_at_ms,
        }


class _EventClock:
    """A per-key clock the tracker moves forward to each event's time (seconds)."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Entry:
    __slots__ = ("breaker", "clock", "key", "transitions")

    def __init__(self, key: Key, config: BreakerConfig, now: float) -> None:
        self.key = key
        self.clock = _EventClock(now)
        self.transitions: list[Transition] = []
        self.breaker = CircuitBreaker(config, clock=self.clock, on_transition=self.transitions.append)


LATE_TOLERANCE_S = 2.0


class StreamCircuitTracker:
    """One event-time circuit breaker per (provider, model); bounded to ``max_keys`` keys."""

    def __init__(self, config: BreakerConfig | None = None, max_keys: int = 10_000,
                 late_tolerance_s: float = LATE_TOLERANCE_S) -> None:
        self.config = config or BreakerConfig()
        self.max_keys = max_keys
        self.late_tolerance_s = late_tolerance_s
        self.late_outcomes = 0  # outcomes older than their key's clock by more than the tolerance, left out
        self._entries: dict[Key, _Entry] = {}

    def apply_batch(
        self,
        timestamp_ms: np.ndarray,
        provider: np.ndarray,
        model: np.ndarray,
        status_ok: np.ndarray,
    ) -> list[CircuitTransition]:
        """Feed one batch; returns the state changes it caused, in event-time order."""
        codes, keys = factorize(provider, model)
        return self.apply_keyed(timestamp_ms, codes, keys, status_ok)

    def apply_keyed(self, timestamp_ms: np.ndarray, codes: np.ndarray,
                    keys: Sequence[tuple[str | None, str | None]], status_ok: np.ndarray) -> list[CircuitTransition]:
        """``apply_batch`` with each call's (provider, model) as a code into ``keys``; None becomes "unknown"."""
        n = int(status_ok.shape[0])
        if n == 0:
            return []
        named = [(p or "unknown", m or "unknown") for p, m in keys]
        order = np.lexsort((timestamp_ms, codes))
        sorted_codes = codes[order]
        bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [n]))
        ts_sorted = np.asarray(timestamp_ms, dtype=np.int64)[order]
        ok_sorted = np.asarray(status_ok, dtype=bool)[order]
        out: list[CircuitTransition] = []
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            key = named[int(sorted_codes[start])]
            out.extend(self._replay(key, ts_sorted[start:end], ok_sorted[start:end]))
        self._evict()
        out.sort(key=lambda t: t.updated_at_ms)
        return out

    def state(self, provider: str, model: str) -> str:
        entry = self._entries.get((provider, model))
        return CLOSED if entry is None else entry.breaker.state

    def states(self) -> list[dict[str, Any]]:
        """Every tracked key's figures at its own event time (for GET endpoints)."""
        return [
            {"provider": key[0], "model": key[1], **entry.breaker.snapshot()}
            for key, entry in sorted(self._entries.items())
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": [
                {"provider": k[0], "model": k[1], "now": e.clock.now, "breaker": e.breaker.export_state()}
                for k, e in self._entries.items()
            ],
            "late": self.late_outcomes,
        }

    def to_bytes(self) -> bytes:
        """Compact JSON of ``to_dict()`` (the KeyedState ``Serializable`` protocol)."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes, config: BreakerConfig | None = None) -> StreamCircuitTracker:
        return cls.from_dict(json.loads(blob), config)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], config: BreakerConfig | None = None, max_keys: int = 10_000
    ) -> StreamCircuitTracker:
        tracker = cls(config, max_keys)
        tracker.late_outcomes = int(data.get("late", 0))
        for item in data.get("keys", []):
            key = (str(item["provider"]), str(item["model"]))
            entry = _Entry(key, tracker.config, float(item["now"]))
            entry.breaker.restore_state(item["breaker"])
            tracker._entries[key] = entry
        return tracker

    # -- internals ----------------------------------------------------------------------------------------

    def _entry(self, key: Key, now: float) -> _Entry:
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = _Entry(key, self.config, now)
        self._entries[key] = entry  # re-insert: dict order doubles as least-recently-seen order
        return entry

    def _replay(self, key: Key, ts: np.ndarray, ok: np.ndarray) -> list[CircuitTransition]:
        entry = self._entry(key, float(ts[0]) / 1000.0)
        breaker, clock = entry.breaker, entry.clock
        current = ts >= round((clock.now - self.late_tolerance_s) * 1000.0)
        if not current.all():
            self.late_outcomes += int(ts.shape[0] - current.sum())
            ts, ok = ts[current], ok[current]
            if not ts.shape[0]:
                return []
        clock.now = max(clock.now, float(ts[0]) / 1000.0)
        if bool(ok.all()) and breaker.state == CLOSED and not entry.transitions:
            clock.now = max(clock.now, float(ts[-1]) / 1000.0)
            breaker.record_success(int(ok.shape[0]))  # cannot change state: no transitions
            return []
        # Runs of equal outcome: successes go in bulk, failures one by one (each may trip the breaker).
        change = np.flatnonzero(np.diff(ok.astype(np.int8))) + 1
        run_starts = np.concatenate(([0], change)).tolist()
        run_ends = np.concatenate((change, [ok.shape[0]])).tolist()
        ts_seconds = (ts / 1000.0).tolist()
        for start, end in zip(run_starts, run_ends, strict=True):
            if ok[start]:
                clock.now = max(clock.now, ts_seconds[start])
                self._successes(breaker, clock, ts_seconds, start, end)
            else:
                for i in range(start, end):
                    clock.now = max(clock.now, ts_seconds[i])
                    breaker.record_failure()
        clock.now = max(clock.now, ts_seconds[-1])
        _ = breaker.state  # let an elapsed open period surface as HALF_OPEN at the batch's last event
        return self._drain(entry)

    @staticmethod
    def _successes(
        breaker: CircuitBreaker, clock: _EventClock, ts_seconds: list[float], start: int, end: int
    ) -> None:
        # Step until the breaker is CLOSED, then the rest of the run cannot change anything: bulk it.
        i = start
        while i < end and breaker.state != CLOSED:
            clock.now = max(clock.now, ts_seconds[i])
            breaker.record_success()
            i += 1
        if i < end:
            clock.now = max(clock.now, ts_seconds[end - 1])
            breaker.record_success(end - i)

    def _drain(self, entry: _Entry) -> list[CircuitTransition]:
        out = [
            CircuitTransition(
                provider=entry.key[0],
                model=entry.key[1],
                previous_state=t.previous,
                state=t.state,
                reason=t.reason,
                error_rate=t.error_rate,
                consecutive_failures=t.consecutive_failures,
                updated_at_ms=round(t.at * 1000.0),
            )
            for t in entry.transitions
        ]
        entry.transitions.clear()
        return out

    def _evict(self) -> None:
        # Least recently seen first; keys with an OPEN circuit are kept as long as others can go.
        excess = len(self._entries) - self.max_keys
        if excess <= 0:
            return
        for key in [k for k, e in self._entries.items() if e.breaker.state != OPEN][:excess]:
            del self._entries[key]


