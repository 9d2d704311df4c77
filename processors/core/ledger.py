"""Budget ledger: spend per scope and UTC calendar period in integer micro-dollars, and the crossings it
causes.

Scopes are ``global`` (key ``all``), ``service``, ``user`` (hashed id; calls without one are skipped) and
``model``; periods are the UTC calendar ``hour``, ``day`` and ``month`` the event time falls in. A call is
also checked on its own against the per-request limit.

Crossings. Each limit has thresholds (80/90/95/100 %). A crossing is reported once per (scope, key, period
bucket, threshold): the first time that bucket's spend reaches ``threshold * limit``, stamped with the event
time of the call that reached it. A batch that jumps several thresholds reports each. A new bucket (the next
hour, day or month) starts from zero and may cross again. Per-request violations are aggregated per
(service, model) per batch: one crossing carrying the count and the most expensive call, not one per call.

Bounded state. Per period only the current and the previous bucket are kept; calls older than both are dropped
and counted (``late_dropped``). Per (period, scope) at most ``max_keys_per_scope`` keys are tracked: the least
recently charged keys go first, previous-bucket keys before current ones. An evicted current key restarts from
zero if it spends again (its spend is under-reported, never over-reported).

Month-end projection: ``spent / elapsed fraction of the month`` for the global scope, alerted once per month
when above ``projection_limit_micros`` and at least ``projection_min_elapsed_ms`` into the month (a projection
from the first minutes of a month is noise).
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.pricing import factorize

USD = 1_000_000  # micro-dollars
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SCOPES: tuple[str, ...] = ("global", "service", "user", "model")
PERIODS: tuple[str, ...] = ("hour", "day", "month")
GLOBAL_KEY = "all"


@dataclass(frozen=True, slots=True)
class PeriodLimits:
    """Limits in micro-dollars per calendar period; None = tracked but unlimited."""

    hour: int | None = None
    day: int | None = None
    month: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Ledger configuration; defaults are the seed budgets ($0.50/request, $10/h, $50/day, $500/month)."""

    per_request_micros: int | None = USD // 2
    global_limits: PeriodLimits = PeriodLimits(hour=10 * USD, day=50 * USD, month=500 * USD)
    service_limits: PeriodLimits = PeriodLimits()
    user_limits: PeriodLimits = PeriodLimits()
    model_limits: PeriodLimits = PeriodLimits()
    thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 1.0)
    projection_limit_micros: int | None = 1_000 * USD
    projection_min_elapsed_ms: int = DAY_MS
    max_keys_per_scope: int = 100_000

    def limit(self, scope: str, period: str) -> int | None:
        limits = getattr(self, f"{scope}_limits")
        return getattr(limits, period)

    def threshold_bp(self) -> np.ndarray:
        """Thresholds in basis points, ascending, so comparisons stay in integers."""
        return np.array(sorted(round(t * 10_000) for t in self.thresholds), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class BudgetCrossing:
    """Spend reached ``threshold`` of a limit; ``period`` is request|hour|day|month|projection."""

    scope: str
    key: str
    period: str
    bucket_start_ms: int
    threshold: float
    spent_micros: int
    limit_micros: int
    at_ms: int
    count: int = 1
    service: str | None = None
    model: str | None = None

    @property
    def severity(self) -> str:
        if self.threshold >= 1.0:
            return "CRITICAL"
        return "ERROR" if self.threshold >= 0.95 else "WARNING"

    def observation(self) -> Observation:
        """This crossing as an alert-policy observation: rule ``budget``, ``budget_projection`` or
        ``cost_per_request``; each new hour/day/month bucket is a new incident (``bucket`` label)."""
        spent, limit = self.spent_micros / USD, self.limit_micros / USD
        labels = [("scope", self.scope), ("key", self.key), ("period", self.period)]
        labels += [(name, v) for name, v in (("service", self.service), ("model", self.model)) if v]
        if self.period == "request":
            rule, summary = "request_budget", f"{self.count} call(s) over ${limit:,.2f}; max ${spent:,.4f}"
        elif self.period == "projection":
            rule, summary = "budget_projection", f"month-end spend projected at ${spent:,.2f} > ${limit:,.2f}"
        else:
            rule = "budget"
            summary = f"{self.scope} {self.key} spent ${spent:,.2f} of ${limit:,.2f} this {self.period}"
        if self.period != "request":
            start = datetime.fromtimestamp(self.bucket_start_ms / 1000, tz=UTC)
            labels.append(("bucket", start.strftime("%Y-%m-%dT%H:%MZ")))
        threshold = limit if self.period == "projection" else limit * self.threshold
        return Observation(
            rule, tuple(sorted(labels)), self.severity, spent, threshold, self.period, summary, self.at_ms
        )


@dataclass(slots=True)
class _Bucket:
    start_ms: int
    # scope -> key -> [spent_micros, thresholds already reported]; dict order = least recently charged first
    spend: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {s: {} for s in SCOPES})


class BudgetLedger:
    """Spend per scope/key/period with threshold crossings; see the module docstring."""

    def __init__(
        self,
        limits: BudgetLimits | None = None,
        scopes: tuple[str, ...] = SCOPES,
        per_request: bool = True,
        projection: bool = True,
    ) -> None:
        """``scopes``/``per_request``/``projection`` select what this ledger tracks, so a deployment can
        split scopes between ledgers (per-partition service and user spend, fleet-wide global and model)."""
        self.limits = limits or BudgetLimits()
        self.scopes = scopes
        self.per_request = per_request
        self.projection_enabled = projection
        self._bp = self.limits.threshold_bp()
        self._fractions = self._bp / 10_000
        self._buckets: dict[str, list[_Bucket]] = {p: [] for p in PERIODS}  # [previous, current]
        self._projection_alerted_month = -1
        self.late_dropped = 0

    # -- batch update ------------------------------------------------------------------------------------

    def apply_batch(
        self,
        timestamp_ms: np.ndarray,
        service: np.ndarray,
        user_hash: np.ndarray,
        model: np.ndarray,
        cost_micros: np.ndarray,
    ) -> list[BudgetCrossing]:
        """Charge a batch (NO_COST / negative costs are skipped); returns the crossings it caused."""
        cost = np.asarray(cost_micros, dtype=np.int64)
        keep = cost >= 0
        if not keep.any():
            return []
        ts = np.asarray(timestamp_ms, dtype=np.int64)[keep]
        cost = cost[keep]
        service, model = np.asarray(service, dtype=object)[keep], np.asarray(model, dtype=object)[keep]
        # Group codes once per scope; every period reuses them. Global is one group; no-user calls get -1.
        groups: dict[str, tuple[np.ndarray, list[tuple[Any, ...]]]] = {
            "global": (np.zeros(ts.shape[0], dtype=np.int64), [(GLOBAL_KEY,)]),
            "service": factorize(service),
            "user": _factorize_skipping_none(np.asarray(user_hash, dtype=object)[keep]),
            "model": factorize(model),
        }
        groups = {scope: groups[scope] for scope in self.scopes}
        out = self._per_request(ts, service, model, cost) if self.per_request else []
        for period in PERIODS:
            starts = bucket_starts(ts, period)
            for start in np.unique(starts).tolist():
                bucket = self._bucket(period, start)
                rows = starts == start
                if bucket is None:
                    self.late_dropped += int(rows.sum())
                    continue
                for scope, (codes, keys) in groups.items():
                    out.extend(self._charge(bucket, period, scope, codes, keys, rows, ts, cost))
            self._evict(period)
        crossing = self.check_projection(int(ts.max())) if self.projection_enabled else None
        if crossing is not None:
            out.append(crossing)
        return out

    def _per_request(
        self, ts: np.ndarray, service: np.ndarray, model: np.ndarray, cost: np.ndarray
    ) -> list[BudgetCrossing]:
        limit = self.limits.per_request_micros
        if limit is None:
            return []
        over = cost > limit  # one vectorised comparison for the whole batch
        if not over.any():
            return []
        codes, keys = factorize(service[over], model[over])
        ts, cost = ts[over], cost[over]
        out = []
        for code, (svc, mdl) in enumerate(keys):
            rows = np.flatnonzero(codes == code)
            worst = rows[int(np.argmax(cost[rows]))]
            key, spent, at = f"{svc}/{mdl}", int(cost[worst]), int(ts[worst])
            out.append(
                BudgetCrossing("request", key, "request", 0, 1.0, spent, limit, at, rows.shape[0], svc, mdl)
            )
        return out

    def _charge(
        self,
        bucket: _Bucket,
        period: str,
        scope: str,
        all_codes: np.ndarray,
        keys: list[tuple[Any, ...]],
        rows: np.ndarray,
        ts: np.ndarray,
        cost: np.ndarray,
    ) -> list[BudgetCrossing]:
        row_idx = np.flatnonzero(rows & (all_codes >= 0))
        if row_idx.shape[0] == 0:
            return []
        codes = all_codes[row_idx]
        sums = _sum_by_code(codes, cost[row_idx], len(keys))
        present = np.flatnonzero(np.bincount(codes, minlength=len(keys)))
        keys, sums = [keys[i] for i in present.tolist()], sums[present]
        store = bucket.spend[scope]
        # Re-insert every charged key so dict order stays least-recently-charged first (the LRU order).
        entries = [store.pop(key, None) or [0, 0] for key in (str(k) for (k,) in keys)]
        for (key,), entry, add in zip(keys, entries, sums.tolist(), strict=True):
            store[str(key)] = entry
            entry[0] += add
        limit = self.limits.limit(scope, period)
        if limit is None or limit <= 0:
            return []
        after = np.fromiter((e[0] for e in entries), dtype=np.int64, count=len(entries))
        reported = np.fromiter((e[1] for e in entries), dtype=np.int64, count=len(entries))
        levels = np.searchsorted(self._bp * limit, after * 10_000, side="right")  # thresholds reached
        out: list[BudgetCrossing] = []
        for code in np.flatnonzero(levels > reported).tolist():  # only keys that crossed something
            entry, key, crossed = (
                entries[code],
                str(keys[code][0]),
                range(entries[code][1], int(levels[code])),
            )
            rows_of_key = row_idx[codes == present[code]]
            amounts = [int(self._bp[i]) * limit for i in crossed]
            times = _crossing_times(entry[0] - int(sums[code]), ts[rows_of_key], cost[rows_of_key], amounts)
            service, model = (key if scope == "service" else None), (key if scope == "model" else None)
            fractions = [float(self._fractions[i]) for i in crossed]
            out.extend(
                BudgetCrossing(
                    scope, key, period, bucket.start_ms, fraction, entry[0], limit, at, 1, service, model
                )
                for fraction, at in zip(fractions, times, strict=True)
            )
            entry[1] = int(levels[code])
        return out

    def _bucket(self, period: str, start: int) -> _Bucket | None:
        """The bucket for ``start``, rotating forward when it is new; None when it is too old to keep."""
        kept = self._buckets[period]
        for bucket in kept:
            if bucket.start_ms == start:
                return bucket
        if kept and start < kept[-1].start_ms:
            if len(kept) == 2 or start < kept[0].start_ms:
                return None  # older than what we keep
            kept.insert(0, _Bucket(start))
            return kept[0]
        kept.append(_Bucket(start))
        del kept[:-2]
        return kept[-1]

    def _evict(self, period: str) -> None:
        cap = self.limits.max_keys_per_scope
        for scope in SCOPES:
            stores = [bucket.spend[scope] for bucket in self._buckets[period]]  # previous first
            excess = sum(len(store) for store in stores) - cap
            for store in stores:
                if excess <= 0:
                    break
                for key in list(store)[:excess]:  # dict order: least recently charged first
                    del store[key]
                    excess -= 1

    # -- projection and reads ------------------------------------------------------------------------------

    def projection(self, now_ms: int) -> dict[str, Any]:
        """Month-end projection of global spend at ``now_ms`` (event time); pure read."""
        month_start, month_end = month_bounds(now_ms)
        spent = 0
        for bucket in self._buckets["month"]:
            if bucket.start_ms == month_start:
                spent = bucket.spend["global"].get(GLOBAL_KEY, [0, 0])[0]
        elapsed = max(now_ms - month_start, 1)
        fraction = min(elapsed / (month_end - month_start), 1.0)
        projected = (
            spent * (month_end - month_start) // elapsed if elapsed < month_end - month_start else spent
        )
        limit = self.limits.projection_limit_micros
        return {
            "month_start_ms": month_start,
            "spent_micros": spent,
            "elapsed_fraction": fraction,
            "projected_micros": int(projected),
            "limit_micros": limit,
            "over_limit": limit is not None and projected > limit,
            "reliable": elapsed >= self.limits.projection_min_elapsed_ms,
        }

    def check_projection(self, now_ms: int) -> BudgetCrossing | None:
        """A crossing the first time in a month the reliable projection exceeds its limit, else None."""
        view = self.projection(now_ms)
        month = view["month_start_ms"]
        if not (view["over_limit"] and view["reliable"]) or self._projection_alerted_month == month:
            return None
        self._projection_alerted_month = month
        projected, limit = view["projected_micros"], view["limit_micros"]
        return BudgetCrossing("global", GLOBAL_KEY, "projection", month, 1.0, projected, limit, now_ms)

    def spent(self, scope: str, key: str, period: str, at_ms: int) -> int:
        """Spend of one key in the bucket containing ``at_ms`` (0 if not tracked)."""
        start = int(bucket_starts(np.array([at_ms], dtype=np.int64), period)[0])
        for bucket in self._buckets[period]:
            if bucket.start_ms == start:
                return bucket.spend[scope].get(key, [0, 0])[0]
        return 0

    def snapshot(self, top: int = 20) -> list[dict[str, Any]]:
        """Current-bucket spend per period and scope, the ``top`` spenders of each, for the API."""
        rows: list[dict[str, Any]] = []
        for period in PERIODS:
            if not self._buckets[period]:
                continue
            bucket = self._buckets[period][-1]
            for scope in SCOPES:
                limit = self.limits.limit(scope, period)
                ranked = sorted(bucket.spend[scope].items(), key=lambda kv: -kv[1][0])[:top]
                rows.extend(
                    {
                        "scope": scope,
                        "key": key,
                        "period": period,
                        "bucket_start_ms": bucket.start_ms,
                        "spent_micros": entry[0],
                        "limit_micros": limit,
                        "used_ratio": entry[0] / limit if limit else None,
                    }
                    for key, entry in ranked
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (for a changelog-backed table)."""
        return {
            "buckets": {
                period: [{"start_ms": b.start_ms, "spend": b.spend} for b in buckets]
                for period, buckets in self._buckets.items()
            },
            "projection_alerted_month": self._projection_alerted_month,
            "late_dropped": self.late_dropped,
        }

    def to_bytes(self) -> bytes:
        """Compact JSON of ``to_dict()`` (the KeyedState ``Serializable`` protocol)."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes, limits: BudgetLimits | None = None, **options: Any) -> BudgetLedger:
        """``options``: the constructor's scope selection (scopes, per_request, projection)."""
        return cls.from_dict(json.loads(blob), limits, **options)

    @classmethod
    def from_dict(cls, data: dict[str, Any], limits: BudgetLimits | None = None, **options: Any) -> BudgetLedger:
        ledger = cls(limits, **options)
        for period, buckets in data.get("buckets", {}).items():
            ledger._buckets[period] = [
                _Bucket(
                    int(b["start_ms"]),
                    {
                        s: {k: [int(v[0]), int(v[1])] for k, v in b["spend"].get(s, {}).items()}
                        for s in SCOPES
                    },
                )
                for b in buckets
            ]
        ledger._projection_alerted_month = int(data.get("projection_alerted_month", -1))
        ledger.late_dropped = int(data.get("late_dropped", 0))
        return ledger


def _crossing_times(before: int, ts: np.ndarray, cost: np.ndarray, amounts_bp: list[int]) -> list[int]:
    """Event time of the call whose running spend first reached each amount (amounts scaled by 10,000)."""
    order = np.argsort(ts, kind="stable")
    running = (before + np.cumsum(cost[order])) * 10_000  # spend after each call, in time order
    first = np.searchsorted(running, np.array(amounts_bp, dtype=np.int64), side="left")
    return ts[order][np.minimum(first, running.shape[0] - 1)].tolist()


def _sum_by_code(codes: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Exact int64 sums of non-negative values per code, without sorting.

    bincount adds in float64, exact while every partial sum stays below 2**53 micro-dollars ($9e9), which one
    batch never reaches; the rare batch that could is summed with integer np.add.at instead.
    """
    if values.shape[0] == 0 or int(values.max()) * values.shape[0] < 2**53:
        return np.rint(np.bincount(codes, weights=values, minlength=size)).astype(np.int64)
    sums = np.zeros(size, dtype=np.int64)
    np.add.at(sums, codes, values)
    return sums


def _factorize_skipping_none(column: np.ndarray) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """factorize, with code -1 for None (calls without a user are charged to no user key)."""
    codes, keys = factorize(column)
    none_code = next((code for code, (key,) in enumerate(keys) if key is None), None)
    if none_code is not None:
        codes = np.where(codes == none_code, -1, codes)
    return codes, keys


def bucket_starts(timestamp_ms: np.ndarray, period: str) -> np.ndarray:
    """UTC start (Unix ms) of the hour/day/month each timestamp falls in, vectorised."""
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    if period == "hour":
        return ts - ts % HOUR_MS
    if period == "day":
        return ts - ts % DAY_MS
    months = ts.astype("datetime64[ms]").astype("datetime64[M]")
    return months.astype("datetime64[ms]").astype(np.int64)


def month_bounds(now_ms: int) -> tuple[int, int]:
    """[start, end) of the UTC calendar month containing ``now_ms``, in Unix ms."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    start_ms = int(start.timestamp() * 1000)
    return start_ms, start_ms + days * DAY_MS


def highest_crossings(crossings: list[BudgetCrossing]) -> list[BudgetCrossing]:
    """One crossing per (scope, key, period, bucket): the highest threshold a batch reached. A batch that
    jumps from 50% to 100% is one CRITICAL incident, not four escalating ones."""
    best: dict[tuple[str, str, str, int], BudgetCrossing] = {}
    for crossing in crossings:
        key = (crossing.scope, crossing.key, crossing.period, crossing.bucket_start_ms)
        if key not in best or crossing.threshold > best[key].threshold:
            best[key] = crossing
    return list(best.values())
