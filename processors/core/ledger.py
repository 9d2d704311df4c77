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
and counted (``late_dropped``). A late call opens the previous bucket if it was never charged: the fleet stage
hears partitions at their own pace, and the first it hears from may already be in the next hour. Per (period,
scope) at most ``max_keys_per_scope`` keys are tracked: the least recently charged keys go first,
previous-bucket keys before current ones. An evicted current key restarts from zero if it spends again (its
spend is under-reported, never over-reported).

Storage (spend_store.py): each (bucket, scope) keeps its keys as an index into parallel int64 arrays; each
bucket is persisted as its own key stamped with the last record offset it absorbed (``drain``/``restore``).

Burn rate. Besides the calendar periods, each scope with an hour limit keeps its spend per UTC minute (the
``minute`` period; the minutes within ten of the newest are kept, since the fleet's partitions do not keep pace
with each other). A key that spends ``burn_fraction`` of its hour limit
within one minute crosses its burn limit: at that pace the hour's budget lasts ``1 / burn_fraction`` minutes
(ten by default, where a key spending its whole limit evenly spends a sixtieth a minute). That is a runaway
caller, seen within a minute rather than when most of the budget is gone: rule ``budget_burn``, ERROR (P1), one
alert per key and hour. Calls too late for the minutes kept are simply not
counted there (they are not ``late_dropped``: their hour, day and month still charge them).

A user's crossing carries the service and model of the call that reached the threshold, so incidents can
place it on the series it is spending on.

Month-end projection: ``spent / elapsed fraction of the month`` for the global scope, alerted once per month
when above ``projection_limit_micros`` and at least ``projection_min_elapsed_ms`` into the month (a projection
from the first minutes of a month is noise). Its severity is INFO (priority P3): a forecast is recorded, never
paged; the month's spend thresholds page once spend itself gets there.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.keyed_state import NEVER
from llmpulse.processors.core.pricing import factorize
from llmpulse.processors.core.spend_store import (
    BURN_PERIOD,
    DAY_MS,
    HOUR_MS,
    OFFSET,
    PERIODS,
    SCOPES,
    TRACKED_PERIODS,
    Bucket,
    BucketRing,
    Charge,
    aggregate,
    bucket_starts,
    group_keys,
)

USD = 1_000_000  # micro-dollars
GLOBAL_KEY = "all"
META_KEY = "meta"  # the persisted late-drop count and projection month (per-bucket persistence)
_BURN_BP = np.array([10_000], dtype=np.int64)  # the burn limit has one threshold: itself


@dataclass(frozen=True, slots=True, kw_only=True)
class PeriodLimits:
    """Limits in micro-dollars per calendar period; None = tracked but unlimited."""

    hour: int | None = None
    day: int | None = None
    month: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetLimits:
    """Ledger configuration; defaults are the seed budgets ($0.50/request, $10/h, $50/day, $500/month)."""

    per_request_micros: int | None = USD // 2
    global_limits: PeriodLimits = PeriodLimits(hour=10 * USD, day=50 * USD, month=500 * USD)
    service_limits: PeriodLimits = PeriodLimits()
    user_limits: PeriodLimits = PeriodLimits()
    model_limits: PeriodLimits = PeriodLimits()
    thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 1.0)
    burn_fraction: float | None = 0.1  # of an hour limit spent within one minute: a runaway (None: off)
    projection_limit_micros: int | None = 1_000 * USD
    projection_min_elapsed_ms: int = DAY_MS
    max_keys_per_scope: int = 100_000

    def limit(self, scope: str, period: str) -> int | None:
        limits = getattr(self, f"{scope}_limits")
        if period == BURN_PERIOD:
            hour = limits.hour
            return None if hour is None or self.burn_fraction is None else round(hour * self.burn_fraction)
        return getattr(limits, period)

    def threshold_bp(self) -> np.ndarray:
        """Thresholds in basis points, ascending, so comparisons stay in integers."""
        return np.array(sorted(round(t * 10_000) for t in self.thresholds), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class BudgetCrossing:
    """Spend reached ``threshold`` of a limit; ``period`` is request|minute|hour|day|month|projection."""

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
        if self.period == "projection":
            return "INFO"  # a forecast, not spend: recorded (P3), never paging; the thresholds page on spend
        if self.period == BURN_PERIOD:
            return "ERROR"  # a runaway: the hour's budget goes within minutes at this pace
        if self.threshold >= 1.0:
            return "CRITICAL"
        if self.threshold >= 0.95:
            return "ERROR"
        # 80 %: an early notice (INFO, P3, recorded), as the seed's Prometheus rules had it; 90 % pages (P2)
        return "WARNING" if self.threshold >= 0.9 else "INFO"

    def observation(self) -> Observation:
        """This crossing as an alert-policy observation: rule ``budget``, ``budget_burn``, ``budget_projection``
        or ``request_budget``; each new hour/day/month bucket is a new incident (``bucket`` label; a burn is
        labelled with its hour: one alert per key and hour, however many minutes burn)."""
        spent, limit = self.spent_micros / USD, self.limit_micros / USD
        labels = [("scope", self.scope), ("key", self.key), ("period", self.period)]
        labels += [(name, v) for name, v in (("service", self.service), ("model", self.model)) if v]
        if self.period == "request":
            rule, summary = "request_budget", f"{self.count} call(s) over ${limit:,.2f}; max ${spent:,.4f}"
        elif self.period == "projection":
            rule, summary = "budget_projection", f"month-end spend projected at ${spent:,.2f} > ${limit:,.2f}"
        elif self.period == BURN_PERIOD:
            rule = "budget_burn"
            summary = (f"{self.scope} {self.key} spent ${spent:,.2f} within a minute, over its burn limit of "
                       f"${limit:,.2f}: at this pace the hour's budget is gone in minutes")
        else:
            rule = "budget"
            summary = f"{self.scope} {self.key} spent ${spent:,.2f} of ${limit:,.2f} this {self.period}"
        if self.period != "request":
            bucket_ms = self.bucket_start_ms - self.bucket_start_ms % HOUR_MS if self.period == BURN_PERIOD \
                else self.bucket_start_ms
            start = datetime.fromtimestamp(bucket_ms / 1000, tz=UTC)
            labels.append(("bucket", start.strftime("%Y-%m-%dT%H:%MZ")))
        threshold = limit if self.period == "projection" else limit * self.threshold
        return Observation(
            rule, tuple(sorted(labels)), self.severity, spent, threshold, self.period, summary, self.at_ms
        )


class BudgetLedger:
    """Spend per scope/key/period with threshold crossings; see the module docstring."""

    def __init__(self, limits: BudgetLimits | None = None, scopes: tuple[str, ...] = SCOPES,
                 per_request: bool = True, projection: bool = True,
                 alert_scopes: tuple[str, ...] | None = None) -> None:
        """``scopes``/``per_request``/``projection`` select what this ledger tracks, so a deployment can
        split scopes between ledgers (per-partition service and user spend, fleet-wide global and model);
        ``alert_scopes`` (default: all tracked) those whose limits it judges: the others are spend only."""
        self.limits = limits or BudgetLimits()
        self.scopes = scopes
        self.alert_scopes = scopes if alert_scopes is None else alert_scopes
        self.per_request = per_request
        self.projection_enabled = projection
        self._bp = self.limits.threshold_bp()
        self._fractions = self._bp / 10_000
        # the minute is kept only for the scopes with a burn limit, and only when there is one
        self._burn_scopes = tuple(s for s in scopes if s in self.alert_scopes
                                  and self.limits.limit(s, BURN_PERIOD) is not None)
        self._periods = TRACKED_PERIODS if self._burn_scopes else PERIODS
        self._ring = BucketRing()
        self._buckets = self._ring.periods  # per period, oldest first
        self._projection_alerted_month = -1
        self.late_dropped = 0
        self._meta_applied = NEVER  # offset stamp of the two fields above (``META_KEY``)
        self._meta_dirty = False
        self._whole_keys: set[str] = set()  # restored whole-ledger blobs, replaced at the next drain

    # -- batch update ------------------------------------------------------------------------------------

    def apply_batch(self, timestamp_ms: np.ndarray, service: np.ndarray, user_hash: np.ndarray, model: np.ndarray,
                    cost_micros: np.ndarray, offset: int | None = None) -> list[BudgetCrossing]:
        """Charge a batch (NO_COST / negative costs are skipped); returns the crossings it caused.

        ``offset``: the source record's, for exactly-once per bucket (a bucket whose stamp includes it is
        skipped); None charges every bucket (a ledger persisted whole, like the fleet's)."""
        cost = np.asarray(cost_micros, dtype=np.int64)
        keep = cost >= 0
        if not keep.any():
            return []
        ts = np.asarray(timestamp_ms, dtype=np.int64)
        service, model = np.asarray(service, dtype=object), np.asarray(model, dtype=object)
        user_hash = np.asarray(user_hash, dtype=object)
        if not keep.all():
            ts, cost, service, model, user_hash = ts[keep], cost[keep], service[keep], model[keep], user_hash[keep]
        # Keys are factorized once per scope; a period whose bucket holds the whole batch (the usual case)
        # reuses the per-key sums of the first such period.
        columns = {"global": None, "service": service, "user": user_hash, "model": model}
        groups = {scope: (np.zeros(ts.shape[0], dtype=np.int64), [GLOBAL_KEY]) if columns[scope] is None
                  else group_keys(columns[scope], scope == "user") for scope in self.scopes}
        whole: dict[str, Charge] = {}
        out = self._per_request(ts, service, model, cost) if self.per_request else []
        lo, hi = int(ts.min()), int(ts.max())
        meta_new = offset is None or offset > self._meta_applied  # late drops and projection count once
        meta_before = (self.late_dropped, self._projection_alerted_month)
        for period in self._periods:
            burn = period == BURN_PERIOD
            first, last = bucket_starts(np.array([lo, hi], dtype=np.int64), period).tolist()
            starts = None if first == last else bucket_starts(ts, period)
            for start in [first] if starts is None else np.unique(starts).tolist():
                rows = None if starts is None else starts == start
                bucket = self._ring.bucket(period, start)
                if bucket is None:
                    if not burn:  # too late for the minutes kept, but charged to its hour, day and month
                        self.late_dropped += (ts.shape[0] if rows is None else int(rows.sum())) if meta_new else 0
                    continue
                if not self._ring.admit(period, bucket, offset):
                    continue
                for scope, (codes, names) in groups.items():
                    if burn and scope not in self._burn_scopes:
                        continue
                    charge = whole.get(scope) if rows is None else None
                    if charge is None:
                        charge = aggregate(codes, names, rows, cost)
                        if rows is None:
                            whole[scope] = charge
                    out.extend(self._charge(bucket, period, scope, charge, ts, cost, service, model))
            self._ring.evict(period, self.limits.max_keys_per_scope, offset)
        crossing = self.check_projection(hi) if self.projection_enabled and meta_new else None
        if crossing is not None:
            out.append(crossing)
        if offset is not None and meta_before != (self.late_dropped, self._projection_alerted_month):
            self._meta_applied, self._meta_dirty = offset, True
        return out

    def _per_request(self, ts: np.ndarray, service: np.ndarray, model: np.ndarray,
                     cost: np.ndarray) -> list[BudgetCrossing]:
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
            out.append(BudgetCrossing("request", key, "request", 0, 1.0, spent, limit, at, rows.shape[0], svc, mdl))
        return out

    def _charge(self, bucket: Bucket, period: str, scope: str, charge: Charge, ts: np.ndarray, cost: np.ndarray,
                service: np.ndarray, model: np.ndarray) -> list[BudgetCrossing]:
        if not charge.names:
            return []
        store = bucket.spend[scope]
        slots = store.slots(charge.names)
        store.spent[slots] += charge.sums
        # Charged keys become the most recent, in code order (the order the persisted dict keeps).
        store.stamp[slots] = self._ring.next_stamps(slots.shape[0])
        limit = self.limits.limit(scope, period)
        if limit is None or limit <= 0 or scope not in self.alert_scopes:
            return []
        after = store.spent[slots]
        bp = _BURN_BP if period == BURN_PERIOD else self._bp
        levels = np.searchsorted(bp * limit, after * 10_000, side="right")  # thresholds reached
        crossed = np.flatnonzero(levels > store.level[slots])  # usually none: the loop is per crossing key
        out: list[BudgetCrossing] = []
        for i in crossed.tolist():
            key, spent, reached = charge.names[i], int(after[i]), int(levels[i])
            crossed_levels = range(int(store.level[slots[i]]), reached)
            rows_of_key = charge.rows[charge.codes == charge.present[i]]
            amounts = [int(bp[t]) * limit for t in crossed_levels]
            reaching = _crossing_rows(spent - int(charge.sums[i]), ts, cost, rows_of_key, amounts)
            for t, row in zip(crossed_levels, reaching, strict=True):
                # a crossing names its own service or model; a user's those of the call that reached the
                # threshold, so its incident can join the series it spends on (the global budget names none)
                svc = key if scope == "service" else service[row] if scope == "user" else None
                mdl = key if scope == "model" else model[row] if scope == "user" else None
                out.append(BudgetCrossing(scope, key, period, bucket.start_ms, float(bp[t]) / 10_000, spent, limit,
                                          int(ts[row]), 1, svc, mdl))
            store.level[slots[i]] = reached
        return out

    # -- projection and reads ------------------------------------------------------------------------------

    def projection(self, now_ms: int) -> dict[str, Any]:
        """Month-end projection of global spend at ``now_ms`` (event time); pure read."""
        month_start, month_end = month_bounds(now_ms)
        spent = 0
        bucket = self._ring.find("month", month_start)
        if bucket is not None:
            spent = bucket.spend["global"].get(GLOBAL_KEY)
        elapsed = max(now_ms - month_start, 1)
        fraction = min(elapsed / (month_end - month_start), 1.0)
        projected = spent * (month_end - month_start) // elapsed if elapsed < month_end - month_start else spent
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

    def current_bucket(self, period: str) -> Bucket | None:
        """The newest bucket of ``period`` (by event time), or None before the first charge; read-only use."""
        kept = self._buckets[period]
        return kept[-1] if kept else None

    def spent(self, scope: str, key: str, period: str, at_ms: int) -> int:
        """Spend of one key in the bucket containing ``at_ms`` (0 if not tracked)."""
        start = int(bucket_starts(np.array([at_ms], dtype=np.int64), period)[0])
        bucket = self._ring.find(period, start)
        return 0 if bucket is None else bucket.spend[scope].get(key)

    def snapshot(self, top: int = 20) -> list[dict[str, Any]]:
        """Current-bucket spend per period and scope, the ``top`` spenders of each, for the API."""
        rows: list[dict[str, Any]] = []
        for period in PERIODS:
            if not self._buckets[period]:
                continue
            bucket = self._buckets[period][-1]
            for scope in SCOPES:
                limit = self.limits.limit(scope, period)
                rows.extend({"scope": scope, "key": key, "period": period, "bucket_start_ms": bucket.start_ms,
                             "spent_micros": spent, "limit_micros": limit,
                             "used_ratio": spent / limit if limit else None}
                            for key, spent in bucket.spend[scope].top(top))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (for a changelog-backed table): per bucket and scope ``{key: [spent, reported
        thresholds]}``, least recently charged first."""
        return {
            "buckets": {period: [b.to_dict() for b in buckets] for period, buckets in self._buckets.items()
                        if buckets or period in PERIODS},  # the minute only once kept (the format stays as it was)
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
            ledger._buckets[period][:] = [ledger._ring.loaded(b) for b in buckets]
        ledger._projection_alerted_month = int(data.get("projection_alerted_month", -1))
        ledger.late_dropped = int(data.get("late_dropped", 0))
        return ledger

    # -- persistence per bucket ------------------------------------------------------------------------------

    def unwritten(self) -> bool:
        """Does ``drain`` have anything to write?"""
        return self._ring.unwritten() or self._meta_dirty or bool(self._whole_keys)

    def drain(self) -> Iterator[tuple[str, bytes | None]]:
        """Changed state as (key, offset || bytes): buckets (``<period>/<start_ms>``) and tombstones of those
        rotated out, ``META_KEY``, and last tombstones of restored whole-ledger blobs (all they held is above)."""
        yield from self._ring.drain()
        if self._meta_dirty:
            meta = {"projection_alerted_month": self._projection_alerted_month, "late_dropped": self.late_dropped}
            yield META_KEY, OFFSET.pack(self._meta_applied) + json.dumps(meta).encode()
            self._meta_dirty = False
        yield from ((key, None) for key in sorted(self._whole_keys))
        self._whole_keys.clear()

    def restore(self, key: str, blob: bytes) -> None:
        """Load one blob ``drain`` wrote, in any order."""
        if key == META_KEY:
            (offset,) = OFFSET.unpack_from(blob, 0)
            self._restore_meta(json.loads(blob[OFFSET.size :]), offset)
        else:
            self._ring.restore(key, blob)

    def restore_whole(self, key: str, blob: bytes) -> None:
        """Load ``offset || to_bytes()``, the whole ledger as persisted before buckets were persisted apart: its
        buckets are stamped with its offset (a later bucket blob wins), rewritten at the next drain, which then
        deletes ``key``."""
        (offset,) = OFFSET.unpack_from(blob, 0)
        data = json.loads(blob[OFFSET.size :])
        for period, buckets in data.get("buckets", {}).items():
            for bucket in buckets:
                self._ring.place(period, self._ring.loaded(bucket), offset, rewrite=True)
        self._restore_meta(data, offset)
        self._meta_dirty = self._meta_dirty or self._meta_applied == offset
        self._whole_keys.add(key)

    def _restore_meta(self, data: dict[str, Any], offset: int) -> None:
        if offset > self._meta_applied:
            self._projection_alerted_month = int(data.get("projection_alerted_month", -1))
            self.late_dropped = int(data.get("late_dropped", 0))
            self._meta_applied = offset


def _crossing_rows(before: int, ts: np.ndarray, cost: np.ndarray, rows: np.ndarray, amounts_bp: list[int]) -> list[int]:
    """Of ``rows``, the call whose running spend (in event-time order) first reached each amount (amounts
    scaled by 10,000)."""
    order = rows[np.argsort(ts[rows], kind="stable")]
    running = (before + np.cumsum(cost[order])) * 10_000  # spend after each call, in time order
    first = np.searchsorted(running, np.array(amounts_bp, dtype=np.int64), side="left")
    return order[np.minimum(first, running.shape[0] - 1)].tolist()


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
