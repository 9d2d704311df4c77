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

from llmpulse.processors.core.pricing import factorize

MAX_SOURCE_LAG_MS = 10_000
MAX_BUFFERED = 200_000  # outcomes; beyond it the oldest are released early, in order


Key = tuple[str | None, str | None]  # (provider, model)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Call outcomes as columns (one row per call, or per kept success of a healthy key); each row's (provider,
    model) as a code into ``keys``, so the circuits group them without hashing a pair per call."""

    timestamp_ms: np.ndarray  # int64
    key: np.ndarray  # int64, into keys
    ok: np.ndarray  # bool
    keys: tuple[Key, ...]

    def __len__(self) -> int:
        return int(self.ok.shape[0])

    @classmethod
    def empty(cls) -> Outcomes:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool), ())

    @classmethod
    def of_pairs(cls, timestamp_ms: np.ndarray, provider: list[str | None], model: list[str | None],
                 ok: np.ndarray) -> Outcomes:
        """From a (provider, model) per row."""
        codes, keys = factorize(np.array(provider, dtype=object), np.array(model, dtype=object))
        return cls(timestamp_ms, codes, ok, tuple(keys))

    @classmethod
    def concat(cls, parts: list[Outcomes]) -> Outcomes:
        """End to end; the keys are the union of the parts' (first seen first), the codes renumbered to it."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        keys = tuple(dict.fromkeys(pair for part in parts for pair in part.keys))
        index = {pair: code for code, pair in enumerate(keys)}
        codes = [part.key if part.keys == keys[: len(part.keys)]  # numbered alike already
                 else np.array([index[pair] for pair in part.keys], np.int64)[part.key] for part in parts]
        return cls(np.concatenate([part.timestamp_ms for part in parts]), np.concatenate(codes),
                   np.concatenate([part.ok for part in parts]), keys)

    def take(self, rows: np.ndarray) -> Outcomes:
        return Outcomes(self.timestamp_ms[rows], self.key[rows], self.ok[rows], self.keys)

    def pairs(self) -> tuple[list[str | None], list[str | None]]:
        """The provider and the model of each row."""
        providers = [provider for provider, _model in self.keys]
        models = [model for _provider, model in self.keys]
        codes = self.key.tolist()
        return [providers[code] for code in codes], [models[code] for code in codes]


class OutcomeOrder:
    """A low-watermark buffer over source partitions; see the module docstring.

    Held outcomes stay in the chunks they came in (one per summary), each sorted by event time, so a release
    costs what it releases plus a step per chunk, not a sort of everything held: a partition a few seconds behind
    keeps tens of thousands of outcomes waiting."""

    def __init__(self, max_source_lag_ms: int = MAX_SOURCE_LAG_MS, max_buffered: int = MAX_BUFFERED) -> None:
        self.max_source_lag_ms = max_source_lag_ms
        self.max_buffered = max_buffered
        self.source_latest: dict[int, int] = {}  # source partition -> latest event time it reported
        self._chunks: list[Outcomes] = []  # in arrival order, each sorted by event time
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

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
            self._hold(outcomes)
        return self.release()

    def release(self, flush: bool = False) -> Outcomes:
        """Outcomes at or before the watermark (all of them with ``flush``), oldest first; the rest stay."""
        if not self._chunks:
            return Outcomes.empty()
        watermark = self.watermark()
        limit = np.iinfo(np.int64).max if flush or watermark is None else watermark
        due: list[Outcomes] = []
        kept: list[Outcomes] = []
        for chunk in self._chunks:
            ts = chunk.timestamp_ms
            if ts[-1] <= limit:
                due.append(chunk)
            elif ts[0] > limit:
                kept.append(chunk)
            else:
                cut = int(np.searchsorted(ts, limit, side="right"))
                due.append(chunk.take(np.arange(cut)))
                kept.append(chunk.take(np.arange(cut, len(chunk))))
        self._chunks = kept
        self._held = sum(len(chunk) for chunk in kept)
        if self._held > self.max_buffered:  # too much ahead of a slow source: the oldest go now
            waiting = _sorted(Outcomes.concat(kept))
            excess = self._held - self.max_buffered
            due.append(waiting.take(np.arange(excess)))
            self._chunks = [waiting.take(np.arange(excess, len(waiting)))]
            self._held = self.max_buffered
        return _sorted(Outcomes.concat(due))

    def to_dict(self) -> dict[str, Any]:
        held = Outcomes.concat(self._chunks)
        return {
            "sources": {str(source): latest for source, latest in self.source_latest.items()},
            "held": [held.timestamp_ms.tolist(), *held.pairs(), (held.ok.view(np.uint8) + 48).tobytes().decode()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OutcomeOrder:
        order = cls()
        if not data:  # a blob written before outcomes were ordered
            return order
        order.source_latest = {int(source): int(latest) for source, latest in data["sources"].items()}
        ts, provider, model, ok = data["held"]
        order._hold(Outcomes.of_pairs(np.array(ts, np.int64), provider, model, np.array([c == "1" for c in ok], bool)))
        return order

    def _hold(self, outcomes: Outcomes) -> None:
        if len(outcomes):
            self._chunks.append(_sorted(outcomes))
            self._held += len(outcomes)


def _sorted(outcomes: Outcomes) -> Outcomes:
    """By event time; equal times keep their order."""
    ts = outcomes.timestamp_ms
    if ts.shape[0] < 2 or bool((ts[1:] >= ts[:-1]).all()):
        return outcomes
    return outcomes.take(np.argsort(ts, kind="stable"))
