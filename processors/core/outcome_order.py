"""Call outcomes from many calls partitions, released to the circuit breakers in event-time order.

The fleet stage hears about one provider/model from every calls partition, and the partitions do not keep pace
with each other: after a restart, or on a loaded worker, one can run minutes of event time behind another. A
circuit breaker is a state machine over ordered outcomes: fed a lagging partition's old outage failures after a
leading partition has already seen the provider recover, it opens again, at the present, for an outage that is
over (and stays open, since no later failure or success follows to move it on).

So outcomes wait here until every source partition that keeps pace has passed them, the usual low watermark of
a stream with several inputs: the watermark is the least of the sources' latest event times, over the sources
no more than ``max_source_lag_ms`` behind the most advanced one. A source further behind (lagging, or quiet: a
partition without calls sends nothing) does not hold the others back; its outcomes still arrive, and the
tracker takes them unless they are older than what a key has already seen (core/circuit.py: late outcomes are
counted, not replayed). ``release(flush=True)`` lets everything out, for when no summary has come for a while.

What is released on a summary is decided by the order of the fleet topic alone, so a replay of it releases
the same outcomes; only the flush on a quiet tick (core/fleet.py) depends on the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_SOURCE_LAG_MS = 10_000
MAX_BUFFERED = 200_000  # outcomes; beyond it the oldest are released early, in order


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Call outcomes as columns (one row per call, or per kept success of a healthy key)."""

    timestamp_ms: np.ndarray  # int64
    provider: np.ndarray  # object
    model: np.ndarray  # object
    ok: np.ndarray  # bool

    def __len__(self) -> int:
        return int(self.ok.shape[0])

    @classmethod
    def empty(cls) -> Outcomes:
        return cls(np.empty(0, np.int64), np.empty(0, object), np.empty(0, object), np.empty(0, bool))

    @classmethod
    def concat(cls, parts: list[Outcomes]) -> Outcomes:
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__slots__))

    def take(self, rows: np.ndarray) -> Outcomes:
        return Outcomes(self.timestamp_ms[rows], self.provider[rows], self.model[rows], self.ok[rows])


class OutcomeOrder:
    """A low-watermark buffer over source partitions; see the module docstring."""

    def __init__(self, max_source_lag_ms: int = MAX_SOURCE_LAG_MS, max_buffered: int = MAX_BUFFERED) -> None:
        self.max_source_lag_ms = max_source_lag_ms
        self.max_buffered = max_buffered
        self.source_latest: dict[int, int] = {}  # source partition -> latest event time it reported
        self._held = Outcomes.empty()

    @property
    def held(self) -> int:
        return len(self._held)

    def watermark(self) -> int | None:
        """Event time every source keeping pace has passed; None before any source reported."""
        if not self.source_latest:
            return None
        latest = np.fromiter(self.source_latest.values(), np.int64, len(self.source_latest))
        return int(latest[latest >= latest.max() - self.max_source_lag_ms].min())

    def add(self, source: int, outcomes: Outcomes) -> Outcomes:
        """Take one summary's outcomes from ``source``; returns those now released, in event-time order."""
        if len(outcomes):
            latest = int(outcomes.timestamp_ms.max())
            self.source_latest[source] = max(self.source_latest.get(source, latest), latest)
            self._held = Outcomes.concat([self._held, outcomes])
        return self.release()

    def release(self, flush: bool = False) -> Outcomes:
        """Outcomes at or before the watermark (all of them with ``flush``), oldest first; the rest stay."""
        held = self._held
        if not len(held):
            return held
        watermark = self.watermark()
        due = held.timestamp_ms <= (np.iinfo(np.int64).max if flush or watermark is None else watermark)
        excess = len(held) - int(due.sum()) - self.max_buffered
        if excess > 0:  # too much ahead of a slow source: the oldest go now
            waiting = np.flatnonzero(~due)
            due[waiting[np.argsort(held.timestamp_ms[waiting], kind="stable")[:excess]]] = True
        released = np.flatnonzero(due)
        self._held = held.take(np.flatnonzero(~due))
        return held.take(released[np.argsort(held.timestamp_ms[released], kind="stable")])

    def to_dict(self) -> dict[str, Any]:
        held = self._held
        return {
            "sources": {str(source): latest for source, latest in self.source_latest.items()},
            "held": [held.timestamp_ms.tolist(), held.provider.tolist(), held.model.tolist(),
                     (held.ok.view(np.uint8) + 48).tobytes().decode()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OutcomeOrder:
        order = cls()
        if not data:  # a blob written before outcomes were ordered
            return order
        order.source_latest = {int(source): int(latest) for source, latest in data["sources"].items()}
        ts, provider, model, ok = data["held"]
        order._held = Outcomes(np.array(ts, np.int64), np.array(provider, object), np.array(model, object),
                               np.array([c == "1" for c in ok], bool))
        return order
