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

Layout. Each (bucket, scope) keeps its keys as an index into parallel int64 arrays (spend, thresholds
reported, last-charge stamp); a batch factorizes each scope's keys once, sums per key with bincount and
charges every period with a few fancy-indexed adds. The persisted JSON is unchanged.

Month-end projection: ``spent / elapsed fraction of the month`` for the global scope, alerted once per month
when above ``projection_limit_micros`` and at least ``projection_min_elapsed_ms`` into the month (a projection
from the first minutes of a month is noise).
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
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


_UNUSED = np.iinfo(np.int64).max  # stamp of a free slot: sorts after every live key


class _Spend:
    """One scope's spend in one bucket: key -> slot in parallel int64 arrays, so a batch charges its keys
    with a few fancy-indexed adds instead of a dict entry per key. ``stamp`` orders keys by their last
    charge (smallest = least recently charged, the eviction order); freed slots are reused."""

    __slots__ = ("free", "index", "keys", "level", "spent", "stamp")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = []  # slot -> key; None for a free slot
        self.free: list[int] = []
        self.spent = np.zeros(8, dtype=np.int64)
        self.level = np.zeros(8, dtype=np.int64)  # thresholds already reported
        self.stamp = np.full(8, _UNUSED, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def slots(self, names: list[str]) -> np.ndarray:
        """The slot of each name (names are distinct), adding unknown ones with zero spend."""
        found = np.fromiter(map(self.index.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        new = np.flatnonzero(found < 0)
        if new.shape[0]:
            found[new] = self._add([names[i] for i in new.tolist()])
        return found

    def _add(self, names: list[str]) -> list[int]:
        reused = [self.free.pop() for _ in range(min(len(names), len(self.free)))]
        for slot, name in zip(reused, names, strict=False):
            self.keys[slot] = name
        first = len(self.keys)
        self.keys.extend(names[len(reused) :])
        slots = reused + list(range(first, len(self.keys)))
        if len(self.keys) > self.spent.shape[0]:  # grow by doubling: amortised O(1) per new key
            grow = max(len(self.keys), 2 * self.spent.shape[0]) - self.spent.shape[0]
            self.spent = np.concatenate([self.spent, np.zeros(grow, dtype=np.int64)])
            self.level = np.concatenate([self.level, np.zeros(grow, dtype=np.int64)])
            self.stamp = np.concatenate([self.stamp, np.full(grow, _UNUSED, dtype=np.int64)])
        self.index.update(zip(names, slots, strict=True))
        return slots

    def get(self, name: str) -> int:
        slot = self.index.get(name)
        return 0 if slot is None else int(self.spent[slot])

    def evict_oldest(self, count: int) -> None:
        """Forget the ``count`` least recently charged keys."""
        used = len(self.keys)
        victims = np.argpartition(self.stamp[:used], count - 1)[:count] if count < used else np.arange(used)
        for slot in victims.tolist():
            name = self.keys[slot]
            if name is not None:
                del self.index[name]
                self.keys[slot] = None
                self.free.append(slot)
        self.spent[victims], self.level[victims], self.stamp[victims] = 0, 0, _UNUSED

    def to_dict(self) -> dict[str, list[int]]:
        """``{key: [spent, reported thresholds]}`` least recently charged first: the persisted shape."""
        order = np.argsort(self.stamp[: len(self.keys)], kind="stable")[: len(self.index)]
        pairs = np.stack([self.spent[order], self.level[order]], axis=1).tolist()  # nested lists built in C
        return dict(zip(map(self.keys.__getitem__, order.tolist()), pairs, strict=True))

    @classmethod
    def load(cls, entries: dict[str, list[int]], first_stamp: int) -> _Spend:
        """From ``to_dict``'s shape, whose order is the charge order."""
        out, n = cls(), len(entries)
        out._add(list(entries))
        values = np.array(list(entries.values()), dtype=np.int64).reshape(n, 2)
        out.spent[:n], out.level[:n] = values[:, 0], values[:, 1]
        out.stamp[:n] = np.arange(first_stamp, first_stamp + n)
        return out


@dataclass(slots=True)
class _Bucket:
    start_ms: int
    spend: dict[str, _Spend] = field(default_factory=lambda: {s: _Spend() for s in SCOPES})


@dataclass(slots=True)
class _Charge:
    """One scope's calls in one bucket, summed per key: rows (into the batch), their codes, and per key
    present in those rows its code, name and summed cost."""

    rows: np.ndarray
    codes: np.ndarray
    present: np.ndarray
    names: list[str]
    sums: np.ndarray


class BudgetLedger:
    """Spend per scope/key/period with threshold crossings; see the module docstring."""

    def __init__(self, limits: BudgetLimits | None = None, scopes: tuple[str, ...] = SCOPES,
                 per_request: bool = True, projection: bool = True) -> None:
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
        self._stamp = 0  # charge counter: the LRU order of keys
        self.late_dropped = 0

    # -- batch update ------------------------------------------------------------------------------------

    def apply_batch(self, timestamp_ms: np.ndarray, service: np.ndarray, user_hash: np.ndarray, model: np.ndarray,
                    cost_micros: np.ndarray) -> list[BudgetCrossing]:
        """Charge a batch (NO_COST / negative costs are skipped); returns the crossings it caused."""
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
        groups = {scope: _group(columns[scope], ts.shape[0], scope == "user") for scope in self.scopes}
        whole: dict[str, _Charge] = {}
        out = self._per_request(ts, service, model, cost) if self.per_request else []
        lo, hi = int(ts.min()), int(ts.max())
        for period in PERIODS:
            first, last = bucket_starts(np.array([lo, hi], dtype=np.int64), period).tolist()
            starts = None if first == last else bucket_starts(ts, period)
            for start in [first] if starts is None else np.unique(starts).tolist():
                rows = None if starts is None else starts == start
                bucket = self._bucket(period, start)
                if bucket is None:
                    self.late_dropped += ts.shape[0] if rows is None else int(rows.sum())
                    continue
                for scope, (codes, names) in groups.items():
                    charge = whole.get(scope) if rows is None else None
                    if charge is None:
                        charge = _aggregate(codes, names, rows, cost)
                        if rows is None:
                            whole[scope] = charge
                    out.extend(self._charge(bucket, period, scope, charge, ts, cost))
            self._evict(period)
        crossing = self.check_projection(hi) if self.projection_enabled else None
        if crossing is not None:
            out.append(crossing)
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

    def _charge(
        self, bucket: _Bucket, period: str, scope: str, charge: _Charge, ts: np.ndarray, cost: np.ndarray
    ) -> list[BudgetCrossing]:
        if not charge.names:
            return []
        store = bucket.spend[scope]
        slots = store.slots(charge.names)
        store.spent[slots] += charge.sums
        # Charged keys become the most recent, in code order (the order the persisted dict keeps).
        store.stamp[slots] = np.arange(self._stamp, self._stamp + slots.shape[0])
        self._stamp += slots.shape[0]
        limit = self.limits.limit(scope, period)
        if limit is None or limit <= 0:
            return []
        after = store.spent[slots]
        levels = np.searchsorted(self._bp * limit, after * 10_000, side="right")  # thresholds reached
        crossed = np.flatnonzero(levels > store.level[slots])  # usually none: the loop is per crossing key
        out: list[BudgetCrossing] = []
        for i in crossed.tolist():
            key, spent, reached = charge.names[i], int(after[i]), int(levels[i])
            crossed_levels = range(int(store.level[slots[i]]), reached)
            rows_of_key = charge.rows[charge.codes == charge.present[i]]
            amounts = [int(self._bp[t]) * limit for t in crossed_levels]
            times = _crossing_times(spent - int(charge.sums[i]), ts[rows_of_key], cost[rows_of_key], amounts)
            service, model = (key if scope == "service" else None), (key if scope == "model" else None)
            out.extend(BudgetCrossing(scope, key, period, bucket.start_ms, float(self._fractions[t]), spent, limit, at,
                                      1, service, model) for t, at in zip(crossed_levels, times, strict=True))
            store.level[slots[i]] = reached
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
                count = min(excess, len(store))
                if count:
                    store.evict_oldest(count)
                    excess -= count

    # -- projection and reads ------------------------------------------------------------------------------

    def projection(self, now_ms: int) -> dict[str, Any]:
        """Month-end projection of global spend at ``now_ms`` (event time); pure read."""
        month_start, month_end = month_bounds(now_ms)
        spent = 0
        for bucket in self._buckets["month"]:
            if bucket.start_ms == month_start:
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

    def spent(self, scope: str, key: str, period: str, at_ms: int) -> int:
        """Spend of one key in the bucket containing ``at_ms`` (0 if not tracked)."""
        start = int(bucket_starts(np.array([at_ms], dtype=np.int64), period)[0])
        for bucket in self._buckets[period]:
            if bucket.start_ms == start:
                return bucket.spend[scope].get(key)
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
                ranked = sorted(bucket.spend[scope].to_dict().items(), key=lambda kv: -kv[1][0])[:top]
                rows.extend({"scope": scope, "key": key, "period": period, "bucket_start_ms": bucket.start_ms,
                             "spent_micros": entry[0], "limit_micros": limit,
                             "used_ratio": entry[0] / limit if limit else None} for key, entry in ranked)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (for a changelog-backed table): per bucket and scope ``{key: [spent, reported
        thresholds]}``, least recently charged first."""
        return {
            "buckets": {
                period: [
                    {"start_ms": b.start_ms, "spend": {s: store.to_dict() for s, store in b.spend.items()}}
                    for b in buckets
                ]
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
            ledger._buckets[period] = [ledger._load_bucket(b) for b in buckets]
        ledger._projection_alerted_month = int(data.get("projection_alerted_month", -1))
        ledger.late_dropped = int(data.get("late_dropped", 0))
        return ledger

    def _load_bucket(self, data: dict[str, Any]) -> _Bucket:
        spend = {}
        for scope in SCOPES:
            entries = data["spend"].get(scope, {})
            spend[scope] = _Spend.load(entries, self._stamp)
            self._stamp += len(entries)
        return _Bucket(int(data["start_ms"]), spend)


def _group(column: np.ndarray | None, n: int, skip_none: bool = False) -> tuple[np.ndarray, list[str]]:
    """Per-row key code and each code's key name; with ``skip_none`` None rows get code -1 (calls without a
    user are charged to no user key)."""
    values = [GLOBAL_KEY] if column is None else column.tolist()
    if values.count(values[0]) == len(values):  # one key (global; a record is one service): no hashing
        keys, codes = values[:1], np.zeros(n, dtype=np.int64)
    else:  # hash-based, the per-row work inside C builtins (np.unique would sort Python objects)
        keys = list(dict.fromkeys(values))
        index = dict(zip(keys, range(len(keys)), strict=True))
        codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=n)
    names = list(map(str, keys))
    skipped = next((i for i, key in enumerate(keys) if key is None), None) if skip_none and None in keys else None
    if skipped is not None:
        codes = np.where(codes == skipped, -1, codes)
        if names[:skipped] + names[skipped + 1 :] == keys[:skipped] + keys[skipped + 1 :]:
            return codes, names
    elif names == keys:  # all keys are str (the identity check is cheap): names are distinct
        return codes, names
    # Some key is not a str: distinct values that print alike (e.g. 1 and "1") share one key.
    merged: dict[str, int] = {}
    remap = np.array([-1 if i == skipped else merged.setdefault(name, len(merged)) for i, name in enumerate(names)],
                     dtype=np.int64)
    return np.where(codes < 0, -1, remap[codes]), list(merged)


def _aggregate(codes: np.ndarray, names: list[str], rows: np.ndarray | None, cost: np.ndarray) -> _Charge:
    """Sum the cost of ``rows`` (None: all) per key, skipping code -1."""
    row_idx = np.flatnonzero(codes >= 0 if rows is None else rows & (codes >= 0))
    row_codes = codes[row_idx]
    if len(names) == 1:  # global: one exact integer sum, no grouping
        present = np.zeros(1 if row_idx.shape[0] else 0, dtype=np.int64)
        sums = np.array([int(cost[row_idx].sum())] if row_idx.shape[0] else [], dtype=np.int64)
    else:
        present = np.flatnonzero(np.bincount(row_codes, minlength=len(names)))
        sums = _sum_by_code(row_codes, cost[row_idx], len(names))[present]
    return _Charge(row_idx, row_codes, present, [names[i] for i in present.tolist()], sums)


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
