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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmpulse import schemas
from llmpulse.config import KafkaSecurity
from llmpulse.producers.topic_follower import FollowerTiming, TopicFollower
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


class BudgetStateFollower(TopicFollower):
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
        self._clock = clock
        self._entries: dict[tuple[str, str, str], BudgetEntry] = {}
        # (scope, key) -> the exhausted entry ending last; rebuilt per key on every record of that key
        self._exhausted: dict[tuple[str, str], BudgetEntry] = {}
        self._newest_ms = 0
        self._codec = SchemaCodec(schemas.BUDGET_STATE)
        super().__init__("budget_state", bootstrap, topic, self._take, security=security,
                         timing=timing or FollowerTiming(poll=0.1), consumer_config=consumer_config)

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

    def _take(self, _key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            self.apply_record(self._codec.decode(value))
        except DecodeError as exc:
            log.warning("llmpulse: skipping unreadable budget_state record: %s", exc)

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
