"""Pick the first healthy provider/model from a preference list, using the fleet's circuit view when it has one.

    router = ProviderRouter([("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")], bootstrap="kafka:9092")
    provider, model = router.choose()            # in-memory read: never waits for Kafka
    ...make the call...
    router.record(provider, model, ok=True)      # feeds the local fallback breaker

Two sources of health, in this order for each preference:

1. **Fleet state**: the processors publish every circuit transition of every provider/model to the compacted
   ``llm-provider-state`` topic (``provider_state`` Avro records keyed ``provider/model``). A background
   thread reads it from the beginning (partitions assigned, no consumer group, nothing committed) and keeps
   the newest state per key in memory. CLOSED and HALF_OPEN count as healthy, OPEN does not.
2. **Local breaker**: one :class:`CircuitBreaker` per preference, fed by :meth:`ProviderRouter.record`. It
   decides for a preference while the topic is unreachable, when the topic holds no state for that key, or
   when the fleet state is older than ``stale_after_s`` (off by default: the processors publish transitions
   only, so an old CLOSED is still current).

The local breakers are fed all the time, so they are warm when the broker goes away.

Failover is visible: when ``choose`` moves to another preference than the one it chose before, it logs one line
(WARNING when it moves down the list, INFO when it comes back up) naming both and why the skipped ones were
ruled out, and counts it in :meth:`ProviderRouter.stats`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmpulse import schemas
from llmpulse.circuit_breaker import CLOSED, HALF_OPEN, BreakerConfig, CircuitBreaker
from llmpulse.config import KafkaSecurity
from llmpulse.producers.topic_follower import FollowerTiming, TopicFollower
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

log = logging.getLogger("llmpulse.router")

HEALTHY = (CLOSED, HALF_OPEN)
Preference = tuple[str, str]


class NoHealthyProvider(RuntimeError):
    """Every preference is open; ``states`` maps each ``provider/model`` to the state that ruled it out."""

    def __init__(self, states: dict[str, str]) -> None:
        listed = ", ".join(f"{key} {state}" for key, state in states.items())
        super().__init__(f"no healthy provider: {listed}")
        self.states = states


@dataclass(frozen=True, slots=True)
class FleetState:
    """The newest provider_state record for one key, as the router last read it."""

    state: str
    reason: str
    error_rate: float
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class RouterStats:
    """What ``choose`` did: calls, answers other than the first preference, and moves between preferences."""

    choices: int
    fallback_choices: int  # answered with a preference below the first
    failovers: int  # moves down the list (the one chosen before was ruled out)
    failbacks: int  # moves back up the list
    current: str | None  # provider/model of the last answer


def key_of(provider: str, model: str) -> str:
    return f"{provider}/{model}"


class ProviderRouter:
    """Thread-safe router; see the module docstring. ``bootstrap=None`` uses the local breakers only;
    ``clock`` (monotonic seconds) times their open period; ``security`` defaults to the ``KAFKA_*`` variables."""

    def __init__(
        self,
        preferences: Sequence[Preference],
        bootstrap: str | None = None,
        topic: str = "llm-provider-state",
        breaker_config: BreakerConfig | None = None,
        *,
        stale_after_s: float | None = None,
        timing: FollowerTiming | None = None,
        consumer_config: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        security: KafkaSecurity | None = None,
    ) -> None:
        if not preferences:
            raise ValueError("ProviderRouter needs at least one (provider, model) preference")
        self.preferences: tuple[Preference, ...] = tuple((str(p), str(m)) for p, m in preferences)
        self.topic = topic
        self.stale_after_s = stale_after_s
        self._breakers = {key_of(*pref): CircuitBreaker(breaker_config, clock=clock) for pref in self.preferences}
        self._fleet: dict[str, FleetState] = {}
        self._lock = threading.Lock()
        self._counts = {"choices": 0, "fallback_choices": 0, "failovers": 0, "failbacks": 0}
        self._current: int | None = None  # index of the preference chosen last
        self._codec = SchemaCodec(schemas.PROVIDER_STATE)
        # Known states stay while the topic is re-read from the beginning: newer records overwrite them.
        self._follower = TopicFollower("router", bootstrap, topic, self._take, security=security, timing=timing,
                                       consumer_config=consumer_config)

    # ---- caller side: in-memory only ---------------------------------------------------------------
    def choose(self) -> Preference:
        """The first healthy preference; NoHealthyProvider when none is. Never blocks on Kafka."""
        ruled_out: dict[str, str] = {}
        for index, (provider, model) in enumerate(self.preferences):
            key = key_of(provider, model)
            fleet = self._fleet_state(key)
            if fleet is not None:
                if fleet.state in HEALTHY:
                    self._chosen(index, ruled_out)
                    return provider, model
                ruled_out[key] = f"{fleet.state} (fleet)"
                continue
            breaker = self._breakers[key]
            if breaker.allow():  # in HALF_OPEN this takes the trial permit the chosen call will use
                self._chosen(index, ruled_out)
                return provider, model
            ruled_out[key] = f"{breaker.state} (local)"
        raise NoHealthyProvider(ruled_out)

    def _chosen(self, index: int, ruled_out: dict[str, str]) -> None:
        with self._lock:
            before, self._current = self._current, index
            self._counts["choices"] += 1
            self._counts["fallback_choices"] += index > 0
            if before is not None and before != index:
                self._counts["failovers" if index > before else "failbacks"] += 1
        if before is None or before == index:
            return
        moved = f"{key_of(*self.preferences[before])} -> {key_of(*self.preferences[index])}"
        if index > before:
            why = ", ".join(f"{key} {state}" for key, state in ruled_out.items())
            log.warning("router failover %s (%s)", moved, why)
        else:
            log.info("router failback %s", moved)

    def stats(self) -> RouterStats:
        with self._lock:
            current = None if self._current is None else key_of(*self.preferences[self._current])
            return RouterStats(**self._counts, current=current)

    def record(self, provider: str, model: str, ok: bool) -> None:
        """The outcome of a call made to a preference (other keys are ignored)."""
        breaker = self._breakers.get(key_of(provider, model))
        if breaker is None:
            return
        if ok:
            breaker.record_success()
        else:
            breaker.record_failure()

    def state(self, provider: str, model: str) -> tuple[str, str]:
        """(state, source) that choose() would act on for one preference: source is "fleet" or "local"."""
        key = key_of(provider, model)
        fleet = self._fleet_state(key)
        if fleet is not None:
            return fleet.state, "fleet"
        return self._breakers[key].state, "local"

    @property
    def reachable(self) -> bool:
        """Whether the provider-state topic answered within the last heartbeat."""
        return self._follower.reachable

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic has been read up to its end once (for start-up); False on timeout."""
        return self._follower.wait_ready(timeout)

    def close(self) -> None:
        self._follower.close()

    def __enter__(self) -> ProviderRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fleet_state(self, key: str) -> FleetState | None:
        if not self._follower.reachable:
            return None
        fleet = self._fleet.get(key)
        if fleet is None or self.stale_after_s is None:
            return fleet
        age_s = time.time() - fleet.updated_at_ms / 1000.0
        return fleet if age_s <= self.stale_after_s else None

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # a tombstone: the processors forgot this key
            if key is not None:
                self._fleet.pop(key.decode("utf-8", "replace"), None)
        else:
            try:
                record = self._codec.decode(value)
            except DecodeError as exc:
                log.warning("llmpulse router: skipping unreadable provider_state record: %s", exc)
            else:
                fleet_key = key_of(record["provider"], record["model"])
                self._fleet[fleet_key] = FleetState(
                    record["state"], record["reason"], record["error_rate"], record["updated_at_ms"]
                )
