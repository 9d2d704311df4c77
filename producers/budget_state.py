"""Follow the compacted budget-state topic in the background and answer "is this budget exhausted?" from memory.

The fleet stage publishes one ``budget_state`` record per (scope, key, period) it enforces, on every change of
state and every few seconds (processors/core/budget_state.py). A daemon thread reads the topic from the
beginning (partitions assigned, no consumer group, nothing committed), as ``ProviderRouter`` follows provider
state, and keeps per (scope, key) the exhausted budgets whose bucket has not ended. ``exhausted()`` and
``fresh()`` are dict reads: the caller never waits on Kafka.

Freshness: the global budgets are republished every few seconds as a heartbeat; the view is fresh while the
topic answers and the newest record is at most ``max_age_s`` old (by the publisher's clock, so keep clocks in
sync within a fraction of that age).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmpulse import schemas
from llmpulse.config import KafkaSecurity
from llmpulse.connection import client_config
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

log = logging.getLogger("llmpulse.budget_state")


@dataclass(frozen=True, slots=True)
class BudgetEntry:
    """One budget_state record as the follower last read it."""

    scope: str
    key: str
    period: str
    state: str
    spent_micros: int
    limit_micros: int | None
    bucket_end_ms: int
    projected_exhaustion_ms: int | None
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class FollowerTiming:
    """How the follower thread paces itself against the broker (seconds)."""

    poll: float = 0.1
    heartbeat: float = 2.0  # how often reachability is re-checked
    request_timeout: float = 2.0
    retry: float = 1.0  # back-off after a failed connect


class BudgetStateFollower:
    """Thread-safe in-memory view of the budget-state topic; ``bootstrap=None`` follows nothing (never fresh)."""

    def __init__(
        self,
        bootstrap: str | None,
        topic: str = "llm-budget-state",
        *,
        security: KafkaSecurity | None = None,
        timing: FollowerTiming | None = None,
        consumer_config: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self._clock = clock
        self._entries: dict[tuple[str, str, str], BudgetEntry] = {}
        # (scope, key) -> the exhausted entry ending last; rebuilt per key on every record of that key
        self._exhausted: dict[tuple[str, str], BudgetEntry] = {}
        self._newest_ms = 0
        self._reachable = False
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._catch_up: dict[int, int] = {}
        self._timing = timing or FollowerTiming()
        self._codec = SchemaCodec(schemas.BUDGET_STATE)
        self._thread: threading.Thread | None = None
        if bootstrap:
            config = {
                **client_config(bootstrap, security, "llmpulse.budget_state.librdkafka"),
                "group.id": f"llmpulse-budget-{uuid.uuid4().hex[:8]}",  # required by the client, never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                **(consumer_config or {}),
            }
            self._thread = threading.Thread(target=self._follow, args=(config,), name="llmpulse-budget-state",
                                            daemon=True)
            self._thread.start()

    # ---- caller side: in-memory only ---------------------------------------------------------------
    def exhausted(self, scope: str, key: str, now_ms: int) -> BudgetEntry | None:
        """The exhausted budget of (scope, key) whose bucket has not ended at ``now_ms``, else None."""
        entry = self._exhausted.get((scope, key))
        return entry if entry is not None and entry.bucket_end_ms > now_ms else None

    def fresh(self, max_age_s: float, now_ms: int) -> bool:
        """Whether the view may be trusted: the topic answers and its newest record is young enough."""
        return self._reachable and self._ready.is_set() and now_ms - self._newest_ms <= max_age_s * 1000.0

    def entries(self) -> list[BudgetEntry]:
        return list(self._entries.values())

    @property
    def reachable(self) -> bool:
        return self._reachable

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic has been read up to its end once (for start-up and tests)."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # ---- follower thread ---------------------------------------------------------------------------
    def _follow(self, config: dict[str, Any]) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(config)
        try:
            while not self._stop.is_set():
                try:
                    partitions = self._assign(consumer)
                    self._read(consumer, partitions)
                except Exception as exc:  # broker down, topic missing: the gate falls back, retry later
                    self._reachable = False
                    log.debug("llmpulse: budget-state topic unavailable: %s", exc)
                    self._stop.wait(self._timing.retry)
        finally:
            consumer.close()

    def _assign(self, consumer: Any) -> list[Any]:
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        metadata = consumer.list_topics(self.topic, timeout=self._timing.request_timeout).topics.get(self.topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise KafkaException(metadata.error if metadata is not None else "no metadata")
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
        self._catch_up = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=self._timing.request_timeout, cached=False)
            if high > low:
                self._catch_up[tp.partition] = high
        consumer.assign(partitions)
        self._reachable = True
        if not self._catch_up:
            self._ready.set()
        return partitions

    def _read(self, consumer: Any, partitions: list[Any]) -> None:
        next_heartbeat = time.monotonic() + self._timing.heartbeat
        while not self._stop.is_set():
            message = consumer.poll(self._timing.poll)
            if message is not None and message.error() is None:
                self._apply(message.partition(), message.offset(), message.value())
            if time.monotonic() >= next_heartbeat:
                consumer.get_watermark_offsets(partitions[0], timeout=self._timing.request_timeout, cached=False)
                self._reachable = True
                next_heartbeat = time.monotonic() + self._timing.heartbeat

    def _apply(self, partition: int, offset: int, value: bytes | None) -> None:
        if value is not None:
            try:
                self.apply_record(self._codec.decode(value))
            except DecodeError as exc:
                log.warning("llmpulse: skipping unreadable budget_state record: %s", exc)
        high = self._catch_up.get(partition)
        if high is not None and offset + 1 >= high:
            del self._catch_up[partition]
            if not self._catch_up:
                self._ready.set()

    def apply_record(self, record: dict[str, Any]) -> None:
        """Absorb one decoded budget_state record (the follower's path; tests feed records directly)."""
        entry = BudgetEntry(record["scope"], record["key"], record["period"], record["state"],
                            record["spent_micros"], record["limit_micros"], record["bucket_end_ms"],
                            record["projected_exhaustion_ms"], record["updated_at_ms"])
        self._entries[(entry.scope, entry.key, entry.period)] = entry
        self._newest_ms = max(self._newest_ms, entry.updated_at_ms)
        budget = (entry.scope, entry.key)
        worst = None
        for period in ("hour", "day", "month"):
            candidate = self._entries.get((entry.scope, entry.key, period))
            if candidate is not None and candidate.state == "exhausted" and (
                    worst is None or candidate.bucket_end_ms > worst.bucket_end_ms):
                worst = candidate
        if worst is None:
            self._exhausted.pop(budget, None)
        else:
            self._exhausted[budget] = worst
