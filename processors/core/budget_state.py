"""Budget state for clients: what the fleet stage tells every SDK about each budget it enforces.

For each (scope, key, period) with a limit, and for the global scope always (its records are the heartbeat an
SDK judges freshness by), one ``budget_state`` record: exact spend in the current calendar bucket, the limit,
the state and the projected exhaustion. The SDK's admission gate (producers/admission.py) denies calls against
an ``exhausted`` budget until its bucket ends.

State: ``exhausted`` at 100 % of the limit, ``warning`` from the lowest alert threshold below 100 % (80 % by
default), else ``ok``. ``records(ledger, now, refresh=False)`` returns the budgets whose state changed since
they were last published (called after every group of summaries, so a crossing leaves at once);
``refresh=True`` (every few seconds) adds those whose spend changed and every global record. The published
view is not persisted: after a restart every budget is published again, which a compacted topic absorbs.

Pure: numpy over the ledger's spend tables, one comparison per period and scope, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpulse.processors.core.ledger import GLOBAL_KEY, BudgetLedger, BudgetLimits, month_bounds
from llmpulse.processors.core.spend_store import DAY_MS, HOUR_MS, PERIODS, bucket_starts

LEVELS: tuple[str, ...] = ("ok", "warning", "exhausted")
OK, WARNING, EXHAUSTED = range(len(LEVELS))
REFRESH_S = 2.0  # how often unchanged-state budgets with new spend, and the global heartbeat, are republished


def bucket_end(period: str, start_ms: int) -> int:
    """Exclusive end of the UTC calendar bucket starting at ``start_ms``."""
    if period == "hour":
        return start_ms + HOUR_MS
    if period == "day":
        return start_ms + DAY_MS
    return month_bounds(start_ms)[1]


def record_key(scope: str, period: str, key: str) -> bytes:
    """The compacted topic's key: the budget's key last, so any character may appear in it."""
    return f"{scope}|{period}|{key}".encode()


@dataclass(slots=True)
class _Published:
    """What was last published for one (period, scope): per spend-table slot, level and spend (-1: never)."""

    bucket_start_ms: int
    level: np.ndarray
    spent: np.ndarray

    def fit(self, size: int) -> None:
        if self.level.shape[0] < size:
            grow = size - self.level.shape[0]
            self.level = np.concatenate([self.level, np.full(grow, -1, dtype=np.int64)])
            self.spent = np.concatenate([self.spent, np.full(grow, -1, dtype=np.int64)])


class BudgetStatePublisher:
    """Decides which budget_state records to publish; see the module docstring."""

    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        below = [t for t in limits.thresholds if t < 1.0]
        self.warning_bp = round(min(below) * 10_000) if below else 10_000
        self._published: dict[tuple[str, str], _Published] = {}

    def records(self, ledger: BudgetLedger, now_ms: int, refresh: bool) -> list[tuple[bytes, dict[str, Any]]]:
        """(topic key, budget_state record) to publish now."""
        out: list[tuple[bytes, dict[str, Any]]] = []
        for period in PERIODS:
            bucket = ledger.current_bucket(period)
            for scope in ledger.scopes:
                limit = self.limits.limit(scope, period)
                if scope == "global":
                    out += self._global(bucket, period, limit, now_ms, refresh)
                elif limit is not None and bucket is not None:
                    out += self._keys(bucket.spend[scope], bucket.start_ms, scope, period, limit, now_ms, refresh)
        return out

    def _global(self, bucket: Any, period: str, limit: int | None, now_ms: int,
                refresh: bool) -> list[tuple[bytes, dict[str, Any]]]:
        if bucket is None:
            start = int(bucket_starts(np.array([now_ms], dtype=np.int64), period)[0])
            spent = 0
        else:
            start, spent = bucket.start_ms, bucket.spend["global"].get(GLOBAL_KEY)
        level = self._level(spent, limit)
        seen = self._published.get(("global", period))
        if not refresh and seen is not None and seen.bucket_start_ms == start and int(seen.level[0]) == level:
            return []
        self._published[("global", period)] = _Published(start, np.array([level]), np.array([spent]))
        return [self._record("global", GLOBAL_KEY, period, start, spent, limit, level, now_ms)]

    def _keys(self, table: Any, start: int, scope: str, period: str, limit: int, now_ms: int,
              refresh: bool) -> list[tuple[bytes, dict[str, Any]]]:
        used = len(table.keys)
        if not used:
            return []
        seen = self._published.get((scope, period))
        if seen is None or seen.bucket_start_ms != start:
            seen = self._published[(scope, period)] = _Published(
                start, np.full(used, -1, dtype=np.int64), np.full(used, -1, dtype=np.int64))
        seen.fit(used)
        spent = table.spent[:used]
        levels = self._levels(spent, limit)
        live = np.fromiter((name is not None for name in table.keys), dtype=bool, count=used)
        changed = levels != seen.level[:used]
        if refresh:
            changed |= spent != seen.spent[:used]
        index = np.flatnonzero(changed & live)
        seen.level[index], seen.spent[index] = levels[index], spent[index]
        return [self._record(scope, table.keys[i], period, start, int(spent[i]), limit, int(levels[i]), now_ms)
                for i in index.tolist()]

    def _levels(self, spent: np.ndarray, limit: int) -> np.ndarray:
        levels = np.where(spent * 10_000 >= self.warning_bp * limit, WARNING, OK)
        return np.where(spent >= limit, EXHAUSTED, levels).astype(np.int64)

    def _level(self, spent: int, limit: int | None) -> int:
        if limit is None:
            return OK
        return int(self._levels(np.array([spent], dtype=np.int64), limit)[0])

    @staticmethod
    def _record(scope: str, key: str, period: str, start: int, spent: int, limit: int | None, level: int,
                now_ms: int) -> tuple[bytes, dict[str, Any]]:
        end = bucket_end(period, start)
        projected = None
        if limit is not None and 0 < spent < limit and start < now_ms < end:
            # linear at the bucket's average rate so far, in integers: start + elapsed * limit / spent
            eta = start + (now_ms - start) * limit // spent
            projected = eta if eta < end else None
        return record_key(scope, period, key), {
            "scope": scope, "key": key, "period": period, "bucket_start_ms": start, "bucket_end_ms": end,
            "spent_micros": spent, "limit_micros": limit, "state": LEVELS[level],
            "projected_exhaustion_ms": projected, "updated_at_ms": now_ms,
        }
