"""Daily usage per service and model, and what routing its easy calls to the cheapest model would save.

State. Per UTC day and service, one ``DayUsage``: for each (model, provider) a vector of integer counters
(requests, failures by kind, tokens, priced cost, and the same figures for the *easy* calls) plus a latency
sketch (1 % relative error, see sketch.py), and the priced spend per hashed user (at most ``max_users`` per
day and service; later users share one ``(other)`` entry). Days older than ``retention_days`` are dropped.
A user's spend is two numbers in arrays (``UserSpend``: a code into the tracker's ``UserNames``, which keeps each
name once, and micro-dollars), 16 bytes per user a day and service instead of a dict entry and an int object (~80).
Each (day, service) object is persisted on its own, so a batch rewrites one small object, never the month.
The same state answers ``llmpulse report`` for a day, an ISO week or a month (see processors/report.py).

Easy calls. A call is easy when it succeeded, was priced, was not a cache hit, and stayed within both token
thresholds (``easy_max_input_tokens``, ``easy_max_output_tokens``): the share a small model can usually serve.

Savings estimate, per service and period. The candidate targets are the configured ``target_models``
(``provider/model`` or ``model``), else every model the service already uses. The target is the candidate
whose prices make the service's whole easy token mix cheapest; each source model's easy calls would then
cost their tokens at the target's rates, and the estimate is ``sum(max(actual - routed, 0))`` over source
models (routing never moves calls to a pricier model). Prompt-size price tiers are ignored: easy calls are
far below every tier threshold. It is an upper bound on savings that assumes the target answers as well.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from llmpulse.processors.core.columns import ERROR, FILTERED, OK, RATE_LIMITED, TIMEOUT, CallColumns
from llmpulse.processors.core.grouping import unique_inverse
from llmpulse.processors.core.keyed_state import KeyedState
from llmpulse.processors.core.pricing import PICO_PER_MICRO, Rate
from llmpulse.processors.core.sketch import LatencySketch, add_groups
from llmpulse.processors.core.slots import SEP

DAY_MS = 86_400_000
COUNTERS: tuple[str, ...] = (
    "requests", "errors", "timeouts", "rate_limited", "filtered", "cache_hits",
    "input_tokens", "output_tokens", "cached_tokens", "cost_micros", "priced",
    "easy", "easy_input_tokens", "easy_output_tokens", "easy_cached_tokens", "easy_cost_micros",
)
INDEX = {name: i for i, name in enumerate(COUNTERS)}
OTHER_USERS = "(other)"
OUTCOME_LABEL = "outcome"  # a call's labels["outcome"] names the business outcome it produced (processors/core/kpis.py)
OTHER_OUTCOMES = "(other)"
_ABSENT = np.iinfo(np.int64).min  # a user's spend is never this low: marks "not yet a user" in bulk lookups
_LEN = struct.Struct("<I")
_DAY_BITS = 12  # days of one batch packed under the series code; retention stays far below 4096 days


@dataclass(frozen=True, slots=True, kw_only=True)
class SavingsConfig:
    easy_max_input_tokens: int = 1000
    easy_max_output_tokens: int = 300
    target_models: tuple[str, ...] = ()  # "provider/model" or "model"; empty: the models a service uses
    retention_days: int = 35  # a calendar month plus the days a report's week may reach back
    max_users: int = 1000  # per day and service
    max_outcomes: int = 100  # outcome names per day and service; later names share "(other)"
    relative_accuracy: float = 0.01


class UserNames:
    """Hashed user names <-> dense codes, shared by the ``DayUsage`` objects of one tracker: a name is kept once
    however many days and services it spends in (``retain`` drops the names no kept day uses any more)."""

    __slots__ = ("_code_of", "_names", "_size")

    def __init__(self) -> None:
        self._code_of: dict[str, int] = {}
        self._names = np.empty(64, dtype=object)  # code -> name; grown by doubling
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def codes(self, names: Sequence[str]) -> np.ndarray:
        """The code of each name (int64), new names registered in order of first appearance."""
        found = np.fromiter(map(self._code_of.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        missing = np.flatnonzero(found < 0)
        if missing.shape[0]:  # names this tracker has not seen yet (only these are looked at one by one)
            fresh = list(dict.fromkeys(names[i] for i in missing.tolist()))
            first, end = self._size, self._size + len(fresh)
            if end > self._names.shape[0]:
                grown = np.empty(max(end, 2 * self._names.shape[0]), dtype=object)
                grown[:first] = self._names[:first]
                self._names = grown
            self._names[first:end] = fresh
            self._code_of.update(zip(fresh, range(first, end), strict=True))
            self._size = end
            found[missing] = np.fromiter(map(self._code_of.__getitem__, (names[i] for i in missing.tolist())),
                                         dtype=np.int64, count=missing.shape[0])
        return found

    def names(self, codes: np.ndarray) -> list[str]:
        return self._names[codes].tolist()  # type: ignore[no-any-return]

    def retain(self, days: Iterable[DayUsage]) -> None:
        """Keep only the names ``days`` (every day still kept by the tracker) use, and renumber their codes (in the
        same order, so each day's codes stay sorted)."""
        days = list(days)
        used = np.unique(np.concatenate([day.user_codes for day in days] or [np.zeros(0, dtype=np.int32)]))
        if used.shape[0] == self._size:
            return
        renumbered = np.full(self._size, -1, dtype=np.int32)
        renumbered[used] = np.arange(used.shape[0], dtype=np.int32)
        kept = self._names[used]
        self._names = np.empty(max(64, 2 * used.shape[0]), dtype=object)
        self._names[: used.shape[0]] = kept
        self._code_of = dict(zip(kept.tolist(), range(used.shape[0]), strict=True))
        self._size = int(used.shape[0])
        for day in days:
            day.renumber_users(renumbered)


class UserSpend:
    """Spend per user of one day and service as arrays: the users' codes (``UserNames``) sorted, for lookups by
    ``searchsorted``, with each one's micro-dollars and the order it was first charged in (``as_dict`` lists users
    in that order, as the dict they replace did)."""

    __slots__ = ("codes", "micros", "order")

    def __init__(self) -> None:
        self.codes = np.zeros(0, dtype=np.int32)  # sorted
        self.micros = np.zeros(0, dtype=np.int64)
        self.order = np.zeros(0, dtype=np.int32)  # 0 for the first user charged, 1 for the second, ...

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def positions(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of each code in ``self.codes``, whether it is there)."""
        at = np.searchsorted(self.codes, codes)
        known = at < self.codes.shape[0]
        known[known] = self.codes[at[known]] == codes[known]
        return at, known

    def insert(self, codes: np.ndarray, micros: np.ndarray) -> None:
        """Add users not yet charged (distinct codes), first charged in the given order."""
        if not codes.shape[0]:
            return
        sort = np.argsort(codes, kind="stable")
        order = np.arange(len(self), len(self) + codes.shape[0], dtype=np.int32)[sort]
        if not len(self):  # a day's first users (most records of a sparse service): nothing to insert between
            self.codes, self.micros, self.order = codes[sort].astype(np.int32), micros[sort].astype(np.int64), order
            return
        at = np.searchsorted(self.codes, codes[sort])
        self.codes = np.insert(self.codes, at, codes[sort].astype(np.int32))
        self.micros = np.insert(self.micros, at, micros[sort])
        self.order = np.insert(self.order, at, order)

    def add_one(self, code: int, micros: int) -> None:
        at, known = self.positions(np.array([code], dtype=np.int64))
        if known[0]:
            self.micros[at[0]] += micros
        else:
            self.insert(np.array([code], dtype=np.int64), np.array([micros], dtype=np.int64))

    def in_charge_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, micros) in the order the users were first charged."""
        first = np.argsort(self.order, kind="stable")
        return self.codes[first], self.micros[first]


class DayUsage:
    """One service's calls of one UTC day: counters and latency per (model, provider), spend per user, and
    calls per business outcome (``labels["outcome"]``)."""

    __slots__ = ("_encoded", "_names", "_spend", "accuracy", "latency", "outcomes", "rows")

    def __init__(self, accuracy: float = 0.01, names: UserNames | None = None) -> None:
        self.accuracy = accuracy
        self.rows: dict[tuple[str, str], np.ndarray] = {}
        self.latency: dict[tuple[str, str], LatencySketch] = {}
        self.outcomes: dict[str, int] = {}
        self._names = UserNames() if names is None else names  # a tracker's days share one
        self._spend = UserSpend()
        # each (model, provider)'s sketch bytes as last written, with the sketch and its count then: a day is
        # rewritten whenever its service has calls, mostly with a few of its sketches changed (values only add)
        self._encoded: dict[tuple[str, str], tuple[LatencySketch, int, bytes]] = {}

    @property
    def users(self) -> dict[str, int]:
        """Spend per user name (micro-dollars), in the order the users were first charged."""
        codes, micros = self._spend.in_charge_order()
        return dict(zip(self._names.names(codes), micros.tolist(), strict=True))

    @property
    def user_codes(self) -> np.ndarray:
        return self._spend.codes

    def renumber_users(self, renumbered: np.ndarray) -> None:
        """Codes renumbered by ``UserNames.retain`` (old code -> new, in the same order)."""
        self._spend.codes = renumbered[self._spend.codes]

    def count_outcome(self, name: str, max_outcomes: int) -> None:
        if name not in self.outcomes and len(self.outcomes) >= max_outcomes:
            name = OTHER_OUTCOMES
        self.outcomes[name] = self.outcomes.get(name, 0) + 1

    def add_counts(self, model: str, provider: str, counts: np.ndarray) -> LatencySketch:
        """Add to the (model, provider)'s counters (``COUNTERS`` order); returns its latency sketch, for the caller to
        add those calls' latencies to (``sketch.add_groups`` for many at once)."""
        key = (model, provider)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = np.zeros(len(COUNTERS), dtype=np.int64)
            self.latency[key] = LatencySketch(self.accuracy)
        row += counts
        return self.latency[key]

    def charge_users(self, users: Sequence[str], micros: Sequence[int] | np.ndarray, max_users: int) -> None:
        """Add each user's spend; once ``max_users`` names are kept, new users share ``OTHER_USERS``.

        Users are taken in the given order (the first new ones keep their names), in bulk: one lookup of every
        code, one insertion of every new user.
        """
        names = list(users)
        amounts = np.asarray(micros, dtype=np.int64)
        codes = self._names.codes(names)
        spend = self._spend
        if np.unique(codes).shape[0] < codes.shape[0]:  # a name twice: the order of additions matters
            self._charge_one_by_one(codes.tolist(), amounts.tolist(), max_users)
            return
        at, known = spend.positions(codes)
        new = np.flatnonzero(~known)
        room = max(max_users - len(spend), 0)
        spend.micros[at[known]] += amounts[known]  # distinct codes: distinct positions
        kept, dropped = new[:room], new[room:]
        spend.insert(codes[kept], amounts[kept])
        if dropped.shape[0]:  # bounded: the spend still counts, only the names are lost
            spend.add_one(self._other_code(), int(amounts[dropped].sum()))

    def _other_code(self) -> int:
        return int(self._names.codes([OTHER_USERS])[0])

    def _charge_one_by_one(self, codes: list[int], amounts: list[int], max_users: int) -> None:
        spend = self._spend
        for code, amount in zip(codes, amounts, strict=True):
            if not spend.positions(np.array([code]))[1][0] and len(spend) >= max_users:
                code = self._other_code()
            spend.add_one(code, amount)

    def to_bytes(self) -> bytes:
        keys = list(self.rows)
        fields: dict[str, object] = {"a": self.accuracy, "rows": [[m, p, self.rows[(m, p)].tolist()] for m, p in keys],
                                     "users": self.users}
        if self.outcomes:  # absent when none: a day without outcomes keeps the earlier format byte for byte
            fields["outcomes"] = self.outcomes
        head = json.dumps(fields, separators=(",", ":")).encode()
        parts = [_LEN.pack(len(head)), head]
        for key in keys:
            parts += [_LEN.pack(len(blob := self._sketch_bytes(key))), blob]
        return b"".join(parts)

    def forget_encoded(self) -> None:
        """Drop the kept sketch bytes (a day no longer current is seldom written again; its bytes would only take
        memory for the rest of the retention)."""
        self._encoded.clear()

    def _sketch_bytes(self, key: tuple[str, str]) -> bytes:
        """The sketch's bytes in the fixed-width form (rewritten per record: the faster form), encoded again only
        when it holds other values than when last encoded (a sketch's count grows with every value added)."""
        sketch = self.latency[key]
        kept = self._encoded.get(key)
        if kept is not None and kept[0] is sketch and kept[1] == sketch.count:
            return kept[2]
        blob = sketch.to_bytes(fixed_width=True)
        self._encoded[key] = (sketch, sketch.count, blob)
        return blob

    @classmethod
    def from_bytes(cls, blob: bytes, names: UserNames | None = None) -> DayUsage:
        (size,) = _LEN.unpack_from(blob, 0)
        head = json.loads(blob[_LEN.size : _LEN.size + size])
        out = cls(float(head["a"]), names)
        at = _LEN.size + size
        for model, provider, counts in head["rows"]:
            row = np.zeros(len(COUNTERS), dtype=np.int64)
            row[: min(len(counts), row.size)] = counts[: row.size]  # tolerate counters added later
            (length,) = _LEN.unpack_from(blob, at)
            out.rows[(model, provider)] = row
            out.latency[(model, provider)] = LatencySketch.from_bytes(blob[at + _LEN.size : at + _LEN.size + length])
            at += _LEN.size + length
        users = head["users"]
        out._spend.insert(out._names.codes([str(k) for k in users]),
                          np.fromiter(map(int, users.values()), dtype=np.int64, count=len(users)))
        out.outcomes = {str(k): int(v) for k, v in head.get("outcomes", {}).items()}  # absent before outcomes
        return out


def usage_key(day: int, service: str) -> str:
    return f"{day}{SEP}{service}"


def _user_codes(calls: CallColumns) -> tuple[np.ndarray, np.ndarray]:
    """(code per call, -1 without a user; user per code), codes ordered as ``CallColumns.factorize`` orders
    them (the wire dictionary's order when the batch carries one)."""
    wire = calls.codes.get("user_hash")
    if wire is not None:
        return wire[0], wire[1]
    codes, values = calls.factorize("user_hash")
    missing = np.flatnonzero(np.equal(values, None))
    return (np.where(np.isin(codes, missing), -1, codes) if missing.shape[0] else codes), values


class SavingsTracker:
    """Daily usage of one partition, persisted through ``state`` (namespace ``usage``)."""

    def __init__(self, config: SavingsConfig | None = None) -> None:
        self.config = config or SavingsConfig()
        accuracy = self.config.relative_accuracy
        self.user_names = UserNames()  # every kept day's user names, once
        self.state: KeyedState[DayUsage] = KeyedState(
            "usage", lambda _key: DayUsage(accuracy, self.user_names),
            lambda blob: DayUsage.from_bytes(blob, self.user_names))
        self._newest_day = -1

    def restore(self, key: str, blob: bytes) -> None:
        self.state.restore(key, blob)
        self._newest_day = max(self._newest_day, int(key.split(SEP, 1)[0]))

    def update(self, calls: CallColumns, cost_micros: np.ndarray, offset: int) -> None:
        """Absorb one record's calls; ``cost_micros`` is the priced cost (NO_COST where still unknown)."""
        if not len(calls):
            return
        days = calls.timestamp_ms // DAY_MS
        newest = int(days.max())
        if newest > self._newest_day:
            self._newest_day = newest
            self.evict()
        keep = days > self._newest_day - self.config.retention_days
        if not keep.all():  # older than what is kept: counting it would resurrect an evicted day
            calls, cost_micros, days = calls.take(keep), cost_micros[keep], days[keep]
            if not len(calls):
                return
        keys, inverse = calls.group_by("service", "model", "provider")
        day0 = int(days.min())
        if int(days.max()) == day0:  # one day: group_by's codes are already dense and sorted
            groups, group_of = np.arange(len(keys), dtype=np.int64) << _DAY_BITS, inverse
        else:
            groups, group_of = unique_inverse((inverse.astype(np.int64) << _DAY_BITS) + (days - day0))
        order = np.argsort(group_of, kind="stable")
        bounds = np.searchsorted(group_of[order], np.arange(len(groups) + 1))
        matrix = self._counters(calls, cost_micros, order, bounds)
        touched: dict[str, DayUsage | None] = {}
        sketches: list[LatencySketch | None] = []  # each group's latency sketch (None: a replayed day)
        for g, code in enumerate(groups.tolist()):
            service, model, provider = keys[code >> _DAY_BITS]
            key = usage_key(day0 + (code & ((1 << _DAY_BITS) - 1)), service or "")
            if key not in touched:  # for_update stamps the offset: ask once per key and batch
                touched[key] = self.state.for_update(key, offset)
            usage = touched[key]
            sketches.append(None if usage is None else usage.add_counts(model or "", provider or "", matrix[g]))
        add_groups(sketches, calls.latency_ms[order] / 1000.0, bounds[:-1])
        self._charge_users(calls, cost_micros, days, touched)
        self._count_outcomes(calls, days, touched)

    def _counters(self, calls: CallColumns, cost: np.ndarray, order: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Per group (calls ``order[bounds[g]:bounds[g+1]]``) the sum of every counter, exact int64."""
        c = self.config
        status, priced = calls.status, cost >= 0
        easy = ((status == OK) & priced & ~calls.cache_hit & (calls.input_tokens <= c.easy_max_input_tokens)
                & (calls.output_tokens <= c.easy_max_output_tokens))
        columns = (  # in COUNTERS order
            np.ones(len(calls), dtype=np.int64), status == ERROR, status == TIMEOUT, status == RATE_LIMITED,
            status == FILTERED, calls.cache_hit, calls.input_tokens, calls.output_tokens, calls.cached_tokens,
            np.where(priced, cost, 0), priced, easy, np.where(easy, calls.input_tokens, 0),
            np.where(easy, calls.output_tokens, 0), np.where(easy, calls.cached_tokens, 0),
            np.where(easy, cost, 0),
        )
        values = np.empty((len(calls), len(COUNTERS)), dtype=np.int64)
        for i, column in enumerate(columns):
            values[:, i] = column
        if bounds.shape[0] == 2:  # one group: a plain column sum
            return values.sum(axis=0, keepdims=True)
        return np.add.reduceat(values[order], bounds[:-1], axis=0)

    def _charge_users(self, calls: CallColumns, cost: np.ndarray, days: np.ndarray,
                      touched: dict[str, DayUsage | None]) -> None:
        """Spend per (day, service, user), summed over the batch, then one bulk update per day and service."""
        user_codes, user_values = _user_codes(calls)
        charged = np.flatnonzero((cost > 0) & (user_codes >= 0))
        if charged.shape[0] == 0:
            return
        service_codes, service_values = calls.factorize("service")
        day0, users = int(days[charged].min()), len(user_values)
        spread = int(days[charged].max()) - day0 + 1
        # Dense code per (service, user, day), ordered that way; float64 sums are exact here: one batch stays
        # far below 2**53 micro-dollars.
        dense = (service_codes[charged].astype(np.int64) * users + user_codes[charged]) * spread + days[charged] - day0
        if len(service_values) * users * spread <= 8 * charged.shape[0] + 4096:  # small range: no sort
            totals = np.bincount(dense, weights=cost[charged])
            groups = np.flatnonzero(totals)  # every charged cost is > 0: a group exists iff its total does
            sums = np.rint(totals[groups]).astype(np.int64)
        else:
            groups, group_of = unique_inverse(dense)
            sums = np.rint(np.bincount(group_of, weights=cost[charged], minlength=len(groups))).astype(np.int64)
        pair, group_day = np.divmod(groups, spread)
        group_service, group_user = np.divmod(pair, users)
        targets = group_service * spread + group_day  # (service, day) of each group
        if spread == 1 and group_service[0] == group_service[-1]:  # one day and service (the usual record)
            splits: list[tuple[int, np.ndarray]] = [(int(targets[0]), np.arange(groups.shape[0]))]
        else:  # each (service, day)'s groups in their order: one stable sort, not a mask per (service, day)
            order = np.argsort(targets, kind="stable")
            firsts, starts = np.unique(targets[order], return_index=True)
            ends = [*starts[1:].tolist(), order.shape[0]]
            splits = [(target, order[start:end])
                      for target, start, end in zip(firsts.tolist(), starts.tolist(), ends, strict=True)]
        per_key: dict[str, list[np.ndarray]] = {}
        for target, members in splits:
            service = service_values[target // spread]
            per_key.setdefault(usage_key(day0 + target % spread, service or ""), []).append(members)
        for key, parts in per_key.items():
            usage = touched.get(key)
            if usage is not None:  # users in code order within a (day, service), as they always were
                members = parts[0] if len(parts) == 1 else np.concatenate(parts)
                names = list(map(str, user_values[group_user[members]].tolist()))
                usage.charge_users(names, sums[members], self.config.max_users)

    def _count_outcomes(self, calls: CallColumns, days: np.ndarray, touched: dict[str, DayUsage | None]) -> None:
        """Calls whose labels name an outcome, per (day, service); a batch without labels costs nothing."""
        if not calls.labels:
            return
        for i, labels in enumerate(calls.labels):
            name = labels.get(OUTCOME_LABEL) if labels else None
            if name:
                usage = touched.get(usage_key(int(days[i]), calls.service[i] or ""))
                if usage is not None:
                    usage.count_outcome(str(name), self.config.max_outcomes)

    def evict(self) -> None:
        """Drop days that left the retention window, and the kept sketch bytes of every day before the newest
        (called when a newer day first appears)."""
        oldest = self._newest_day - self.config.retention_days
        kept, dropped = [], 0
        for key, usage in self.state.items():
            day = int(key.split(SEP, 1)[0])
            if day <= oldest:
                self.state.delete(key)
                dropped += 1
            else:
                kept.append(usage)
                if day < self._newest_day:
                    usage.forget_encoded()
        if dropped:  # names only the dropped days used go too
            self.user_names.retain(kept)

    def days(self, start_ms: int, end_ms: int) -> Iterator[tuple[str, DayUsage]]:
        """(service, usage) of every kept day overlapping [start_ms, end_ms)."""
        first, last = start_ms // DAY_MS, (end_ms - 1) // DAY_MS
        for key, usage in self.state.items():
            day, service = key.split(SEP, 1)
            if first <= int(day) <= last:
                yield service, usage


@dataclass(slots=True)
class UsageRow:
    service: str
    model: str
    provider: str
    counts: np.ndarray
    latency: LatencySketch

    def __getitem__(self, name: str) -> int:
        return int(self.counts[INDEX[name]])


@dataclass(slots=True)
class Usage:
    """Usage summed over a period and over partitions: rows per (service, model, provider), users and outcomes
    per service."""

    rows: dict[tuple[str, str, str], UsageRow] = field(default_factory=dict)
    users: dict[str, dict[str, int]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, service: str, day: DayUsage, counts_only: bool = False) -> None:
        """Add a service's day; ``counts_only``: its counters and outcomes, not its latency or its users' spend."""
        for (model, provider), counts in day.rows.items():
            row = self.rows.get((service, model, provider))
            if row is None:
                row = self.rows[(service, model, provider)] = UsageRow(
                    service, model, provider, np.zeros(len(COUNTERS), dtype=np.int64), LatencySketch(day.accuracy))
            row.counts += counts
            if not counts_only:
                row.latency.merge(day.latency[(model, provider)])
        if day.outcomes:
            counted = self.outcomes.setdefault(service, {})
            for name, count in day.outcomes.items():
                counted[name] = counted.get(name, 0) + count
        if counts_only:
            return
        spend = self.users.setdefault(service, {})
        for user, micros in day.users.items():
            spend[user] = spend.get(user, 0) + micros

    @classmethod
    def collect(cls, trackers: Iterable[SavingsTracker], start_ms: int, end_ms: int,
                counts_only: bool = False) -> Usage:
        """The trackers' days in [start_ms, end_ms). ``counts_only`` (the savings and KPI figures, computed at every
        scrape): rows without latency and no users, which at 10,000 users were most of a scrape's cost."""
        out = cls()
        for tracker in trackers:
            for service, day in tracker.days(start_ms, end_ms):
                out.add(service, day, counts_only)
        return out


@dataclass(frozen=True, slots=True)
class ServiceSavings:
    service: str
    target: str | None  # "provider/model"; None when no candidate has a known price
    requests: int
    easy_calls: int
    cost_micros: int
    easy_cost_micros: int
    routed_easy_cost_micros: int
    savings_micros: int

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.service, "target": self.target, "requests": self.requests,
            "easy_calls": self.easy_calls, "easy_share": self.easy_calls / self.requests if self.requests else 0.0,
            "cost_usd": self.cost_micros / 1e6, "easy_cost_usd": self.easy_cost_micros / 1e6,
            "routed_easy_cost_usd": self.routed_easy_cost_micros / 1e6, "savings_usd": self.savings_micros / 1e6,
            "savings_ratio": self.savings_micros / self.cost_micros if self.cost_micros else 0.0,
        }


RateLookup = Callable[[str, str], Rate | None]
_TOTALS = ("requests", "easy", "cost_micros", "easy_cost_micros")  # a service's figures summed over its rows


def estimate_savings(usage: Usage, rate_of: RateLookup, targets: tuple[str, ...] = ()) -> list[ServiceSavings]:
    """Per service: the routing saving described in the module docstring, largest saving first. Every service at
    once, on arrays of its rows (a scrape asks this of every service for the day and the month: one numpy pass
    each per service was ~30 µs, ~0.15 s a scrape at ~2,500 services)."""
    rows = list(usage.rows.values())
    if not rows:
        return []
    names, service_of = np.unique(np.array([row.service for row in rows], dtype=object), return_inverse=True)
    n = len(names)
    counts = np.stack([row.counts for row in rows])
    totals = np.zeros((n, len(_TOTALS)), dtype=np.int64)
    np.add.at(totals, service_of, counts[:, [INDEX[name] for name in _TOTALS]])
    easy_input, easy_output, easy_cached = (counts[:, INDEX[name]].astype(np.float64) for name in
                                            ("easy_input_tokens", "easy_output_tokens", "easy_cached_tokens"))
    # Easy tokens per source row as (uncached input, output, cache read): the pricer's three components.
    tokens = np.stack([np.maximum(easy_input - easy_cached, 0), easy_output, easy_cached], axis=1)
    actual = counts[:, INDEX["easy_cost_micros"]].astype(np.float64)
    if targets:
        candidates = [tuple(t.split("/", 1)) if "/" in t else ("", t) for t in targets]
        allowed = np.ones((n, len(candidates)), dtype=bool)
    else:  # every model a service already uses, in (provider, model) order
        candidates = sorted({(row.provider, row.model) for row in rows})
        column = {candidate: i for i, candidate in enumerate(candidates)}
        allowed = np.zeros((n, len(candidates)), dtype=bool)
        allowed[service_of, [column[(row.provider, row.model)] for row in rows]] = True
    rated = [(i, rate) for i, candidate in enumerate(candidates) if (rate := rate_of(*candidate)) is not None]
    allowed = allowed[:, [i for i, _ in rated]]
    priced = allowed.any(axis=1)
    routed = tokens @ np.array([[r.input, r.output, r.cached] for _, r in rated], dtype=np.float64).reshape(-1, 3).T
    routed /= PICO_PER_MICRO  # (rows, priced candidates) micro-dollars; float: an estimate, no overflow
    whole = np.zeros((n, len(rated)))
    np.add.at(whole, service_of, routed)
    if rated:
        best = np.argmin(np.where(allowed, whole, np.inf), axis=1)  # the first cheapest in candidate order
        chosen = routed[np.arange(len(rows)), best[service_of]]
    else:
        best, chosen = np.zeros(n, dtype=np.int64), actual
    per_row = np.minimum(chosen, actual)  # a row already cheaper than the target stays where it is
    routed_micros = np.bincount(service_of, per_row, n)
    saved = np.bincount(service_of, actual - per_row, n)
    out = []
    for s, service in enumerate(names.tolist()):
        requests, easy, cost, easy_cost = totals[s].tolist()
        if priced[s]:
            provider, model = candidates[rated[int(best[s])][0]]
            target: str | None = f"{provider}/{model}" if provider else model
            routed_cost, savings = round(float(routed_micros[s])), round(float(saved[s]))
        else:
            target, routed_cost, savings = None, easy_cost, 0
        out.append(ServiceSavings(service, target, requests, easy, cost, easy_cost, routed_cost, savings))
    return sorted(out, key=lambda s: (-s.savings_micros, s.service))
