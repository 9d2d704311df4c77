"""Budget ledger: exact integer spend, crossings once per bucket, UTC roll-over, projection, bounded keys."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

import numpy as np

from llmpulse.processors.core.alert_policy import AlertPolicy
from llmpulse.processors.core.columns import NO_COST
from llmpulse.processors.core.ledger import (
    USD,
    BudgetLedger,
    BudgetLimits,
    PeriodLimits,
    bucket_starts,
    month_bounds,
)
from llmpulse.processors.core.spend_store import SpendTable


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


T0 = ms(2025, 3, 10, 12, 0)


def charge(
    ledger: BudgetLedger,
    costs: list[int],
    at: int | list[int] = T0,
    service: str = "search",
    user: str | None = "u1",
    model: str = "gpt-4o",
) -> list:
    n = len(costs)
    ts = np.array(at if isinstance(at, list) else [at + i for i in range(n)], dtype=np.int64)
    return ledger.apply_batch(
        ts,
        np.array([service] * n, dtype=object),
        np.array([user] * n, dtype=object),
        np.array([model] * n, dtype=object),
        np.array(costs, dtype=np.int64),
    )


def test_spend_sums_are_exact_integers_per_scope() -> None:
    ledger = BudgetLedger()
    rng = np.random.default_rng(3)
    costs = rng.integers(0, 300_000, 5000)
    services = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, 5000)]
    users = np.array(["u1", "u2", None], dtype=object)[rng.integers(0, 3, 5000)]
    models = np.array(["m1", "m2"], dtype=object)[rng.integers(0, 2, 5000)]
    ts = np.full(5000, T0, dtype=np.int64)
    ledger.apply_batch(ts, services, users, models, costs)
    assert ledger.spent("global", "all", "hour", T0) == int(costs.sum())
    assert ledger.spent("service", "b", "day", T0) == int(costs[services == "b"].sum())
    assert ledger.spent("user", "u2", "month", T0) == int(costs[users == "u2"].sum())
    assert ledger.spent("model", "m1", "hour", T0) == int(costs[models == "m1"].sum())
    assert ledger.spent("user", "None", "hour", T0) == 0  # calls without a user are not a user


def test_unpriced_calls_are_not_charged() -> None:
    ledger = BudgetLedger()
    charge(ledger, [100, NO_COST, 250])
    assert ledger.spent("global", "all", "day", T0) == 350


NO_REQUEST_LIMIT = BudgetLimits(per_request_micros=None, burn_fraction=None)  # the calendar periods alone


def test_each_threshold_crosses_exactly_once_per_bucket() -> None:
    ledger = BudgetLedger(NO_REQUEST_LIMIT)  # global: $10/hour
    out = charge(ledger, [7_900_000])
    assert [c.period for c in out] == []
    out = charge(ledger, [100_000], at=T0 + 1000)  # exactly 80 % of $10
    assert [(c.scope, c.period, c.threshold) for c in out] == [("global", "hour", 0.8)]
    assert out[0].at_ms == T0 + 1000 and out[0].spent_micros == 8 * USD and out[0].severity == "INFO"
    assert charge(ledger, [10_000], at=T0 + 2000) == []  # 80 % again: not repeated
    # One batch jumps 90 % and 95 %: two crossings, each stamped at the call that reached it.
    out = charge(ledger, [600_000, 100_000, 900_000], at=[T0 + 5000, T0 + 3000, T0 + 4000])
    assert [(c.threshold, c.at_ms) for c in out] == [(0.9, T0 + 4000), (0.95, T0 + 5000)]
    assert out[1].severity == "ERROR"


def test_limit_crossing_and_hour_rollover_at_utc_boundary() -> None:
    ledger = BudgetLedger(NO_REQUEST_LIMIT)
    late = ms(2025, 3, 10, 12, 59, 59)
    out = charge(ledger, [10 * USD], at=late)
    assert [c.threshold for c in out if c.period == "hour"] == [0.8, 0.9, 0.95, 1.0]
    assert [c.severity for c in out if c.period == "hour"][-1] == "CRITICAL"
    # One second later is a new UTC hour: spend restarts and the 80 % threshold may cross again.
    out = charge(ledger, [8 * USD], at=ms(2025, 3, 10, 13, 0, 0))
    assert [(c.period, c.threshold, c.bucket_start_ms) for c in out if c.period == "hour"] == [
        ("hour", 0.8, ms(2025, 3, 10, 13))
    ]
    assert ledger.spent("global", "all", "hour", ms(2025, 3, 10, 13, 30)) == 8 * USD
    assert ledger.spent("global", "all", "hour", late) == 10 * USD  # previous bucket still kept
    assert ledger.spent("global", "all", "day", late) == 18 * USD  # same UTC day


def test_day_and_month_buckets_follow_the_utc_calendar() -> None:
    stamps = np.array([ms(2025, 2, 28, 23, 59, 59), ms(2025, 3, 1), ms(2024, 2, 29, 12)], dtype=np.int64)
    assert bucket_starts(stamps, "day").tolist() == [ms(2025, 2, 28), ms(2025, 3, 1), ms(2024, 2, 29)]
    assert bucket_starts(stamps, "month").tolist() == [ms(2025, 2, 1), ms(2025, 3, 1), ms(2024, 2, 1)]
    assert month_bounds(ms(2024, 2, 15)) == (ms(2024, 2, 1), ms(2024, 3, 1))


def test_old_buckets_are_evicted_and_late_calls_dropped() -> None:
    ledger = BudgetLedger()
    for hour in range(5):
        charge(ledger, [1000], at=ms(2025, 3, 10, hour))
    assert ledger.spent("global", "all", "hour", ms(2025, 3, 10, 0)) == 0  # evicted
    assert ledger.spent("global", "all", "hour", ms(2025, 3, 10, 3)) == 1000  # previous
    charge(ledger, [1000], at=ms(2025, 3, 10, 1))  # too late for the hour view
    assert ledger.late_dropped == 1
    assert ledger.spent("global", "all", "day", ms(2025, 3, 10, 1)) == 6000  # the day still counts it


def test_per_request_limit_is_checked_per_call_and_aggregated() -> None:
    ledger = BudgetLedger()
    out = charge(ledger, [500_000, 500_001, 2 * USD, 100])
    requests = [c for c in out if c.period == "request"]
    assert len(requests) == 1
    crossing = requests[0]
    assert (crossing.count, crossing.spent_micros, crossing.at_ms) == (2, 2 * USD, T0 + 2)
    assert (crossing.service, crossing.model) == ("search", "gpt-4o")
    assert crossing.observation().rule == "request_budget"


def test_service_user_model_limits_apply_per_key() -> None:
    limits = BudgetLimits(
        global_limits=PeriodLimits(),
        user_limits=PeriodLimits(day=USD),
        model_limits=PeriodLimits(month=3 * USD),
        per_request_micros=None,
    )
    ledger = BudgetLedger(limits)
    out = charge(ledger, [USD], user="heavy") + charge(ledger, [10], user="light")
    assert [(c.scope, c.key, c.threshold) for c in out] == [
        ("user", "heavy", 0.8), ("user", "heavy", 0.9), ("user", "heavy", 0.95), ("user", "heavy", 1.0)
    ]  # fmt: skip
    out = charge(ledger, [2 * USD], user="light", at=T0 + 10)
    assert {(c.scope, c.key, c.threshold) for c in out} >= {("model", "gpt-4o", 1.0), ("user", "light", 1.0)}
    assert next(c for c in out if c.scope == "model").model == "gpt-4o"


def test_month_projection_alerts_once_per_month() -> None:
    ledger = BudgetLedger(BudgetLimits(global_limits=PeriodLimits(), per_request_micros=None))
    start, end = month_bounds(T0)
    # 10 days into a 31-day March with $400 spent: projected $400 * 31 / 10 = $1,240 > $1,000.
    ten_days = start + 10 * 86_400_000
    out = charge(ledger, [400 * USD], at=ten_days)
    projection = [c for c in out if c.period == "projection"]
    assert len(projection) == 1
    assert projection[0].spent_micros == 1_240 * USD
    assert projection[0].observation().rule == "budget_projection"
    assert projection[0].observation().severity == "INFO"  # a forecast: recorded at P3, never paging
    view = ledger.projection(ten_days)
    assert view["over_limit"] and view["elapsed_fraction"] == 10 / 31
    assert [c for c in charge(ledger, [USD], at=ten_days + 1) if c.period == "projection"] == []
    # A new month starts a new projection (and needs a day of data first).
    april = end + 2 * 86_400_000
    out = charge(ledger, [100 * USD], at=april)
    assert [c.bucket_start_ms for c in out if c.period == "projection"] == [end]


def test_projection_is_quiet_in_the_first_day() -> None:
    ledger = BudgetLedger()
    start, _ = month_bounds(T0)
    out = charge(ledger, [20 * USD], at=start + 3_600_000)  # projects $14,880 but only 1 h in
    assert [c for c in out if c.period == "projection"] == []
    assert not ledger.projection(start + 3_600_000)["reliable"]


def test_user_keys_are_capped_least_recent_first() -> None:
    ledger = BudgetLedger(BudgetLimits(max_keys_per_scope=100))
    users = np.array([f"u{i}" for i in range(300)], dtype=object)
    n = users.shape[0]
    ledger.apply_batch(
        np.full(n, T0, dtype=np.int64),
        np.array(["s"] * n, dtype=object),
        users,
        np.array(["m"] * n, dtype=object),
        np.ones(n, dtype=np.int64),
    )
    snap = [row for row in ledger.snapshot(top=1000) if row["scope"] == "user" and row["period"] == "day"]
    assert len(snap) == 100
    assert ledger.spent("user", "u299", "day", T0) == 1 and ledger.spent("user", "u0", "day", T0) == 0
    assert ledger.spent("global", "all", "day", T0) == 300  # global totals are unaffected


def test_snapshot_lists_the_top_spenders_as_a_full_sort_would_ties_and_evicted_keys_included() -> None:
    """The top spenders are chosen without sorting every key: the same keys, spend and order (most first, of equal
    spend the least recently charged first) as sorting them all, with keys evicted meanwhile left out."""
    rng = np.random.default_rng(7)
    ledger = BudgetLedger(BudgetLimits(max_keys_per_scope=400))
    for batch in range(6):  # 600 users charged over 6 batches, capped at 400: the first ones evicted
        users = np.array([f"u{i}" for i in rng.permutation(600)[:200]], dtype=object)
        n = users.shape[0]
        ledger.apply_batch(np.full(n, T0 + batch, dtype=np.int64), np.array(["s"] * n, dtype=object), users,
                           np.array(["m"] * n, dtype=object), rng.integers(1, 6, n).astype(np.int64) * 1000)
    table = ledger.to_dict()["buckets"]["day"][-1]["spend"]["user"]  # least recently charged first
    full_sort = sorted(table.items(), key=lambda kv: -kv[1][0])
    for top in (1, 7, 50, 400, 1000):
        rows = [row for row in ledger.snapshot(top=top) if row["scope"] == "user" and row["period"] == "day"]
        assert [(row["key"], row["spent_micros"]) for row in rows] == [(k, v[0]) for k, v in full_sort[:top]]
    assert len({entry[0] for entry in table.values()}) < len(table)  # ties were there to be ordered


def test_snapshot_reports_ratio_and_round_trips_through_json() -> None:
    ledger = BudgetLedger(NO_REQUEST_LIMIT)
    charge(ledger, [2_500_000], service="a")
    row = next(r for r in ledger.snapshot() if r["scope"] == "global" and r["period"] == "hour")
    assert (row["spent_micros"], row["limit_micros"], row["used_ratio"]) == (2_500_000, 10 * USD, 0.25)
    restored = BudgetLedger.from_dict(json.loads(json.dumps(ledger.to_dict())), NO_REQUEST_LIMIT)
    assert restored.snapshot() == ledger.snapshot()
    out = charge(restored, [5_500_000], at=T0 + 10)  # reaches 80 % only with the restored spend
    assert [(c.scope, c.threshold) for c in out] == [("global", 0.8)]


def test_crossings_become_one_escalating_budget_alert_per_bucket() -> None:
    ledger = BudgetLedger(NO_REQUEST_LIMIT)
    policy = AlertPolicy()
    crossings = (
        charge(ledger, [8 * USD]) + charge(ledger, [USD], at=T0 + 10) + charge(ledger, [USD], at=T0 + 20)
    )
    hourly = [c for c in crossings if c.period == "hour"]
    assert [c.threshold for c in hourly] == [0.8, 0.9, 0.95, 1.0]
    events = policy.observe_many(c.observation() for c in hourly)
    # 80 % is an early notice (INFO, P3), 90 % escalates (WARNING), 95 % (ERROR), 100 % (CRITICAL).
    assert [(e.status, e.severity, e.rule) for e in events] == [
        ("firing", "INFO", "budget"), ("firing", "WARNING", "budget"), ("firing", "ERROR", "budget"),
        ("firing", "CRITICAL", "budget"),
    ]  # fmt: skip
    assert len({e.alert_id for e in events}) == 1
    assert events[-1].labels["bucket"] == "2025-03-10T12:00Z"
    assert events[-1].observed == 10.0 and events[-1].threshold == 10.0
    # The next hour is a new bucket, hence a new incident.
    next_hour = [c for c in charge(ledger, [8 * USD], at=ms(2025, 3, 10, 13)) if c.period == "hour"]
    assert [e.status for e in policy.observe_many(c.observation() for c in next_hour)] == ["firing"]


def test_sums_stay_exact_beyond_float_precision() -> None:
    ledger = BudgetLedger(BudgetLimits(per_request_micros=None, projection_limit_micros=None))
    big = 2**52 + 1  # float64 would round these
    charge(ledger, [big, big, 3])
    assert ledger.spent("global", "all", "day", T0) == 2 * big + 3


# Written by the ledger before its spend moved to per-bucket arrays (dict order = least recently charged
# first): limits user day $1, 3 keys per scope; alice already reported 80 % of her day; the previous hour's
# alice was evicted by the cap.
PERSISTED_BEFORE_ARRAYS = (
    b'{"buckets":{"hour":[{"start_ms":1741604400000,"spend":{"global":{"all":[850300,0]},"service":{"search":'
    b'[850300,0]},"user":{"bob":[100,0]},"model":{"gpt-4o":[850300,0]}}},{"start_ms":1741608000000,"spend":'
    b'{"global":{"all":[400300,0]},"service":{"chat":[400300,0]},"user":{"carol":[300,0],"bob":[400000,0]},'
    b'"model":{"gpt-4o":[400300,0]}}}],"day":[{"start_ms":1741564800000,"spend":{"global":{"all":[1250600,0]},'
    b'"service":{"search":[850300,0],"chat":[400300,0]},"user":{"alice":[850000,1],"carol":[300,0],"bob":'
    b'[400100,0]},"model":{"gpt-4o":[1250600,0]}}}],"month":[{"start_ms":1740787200000,"spend":{"global":'
    b'{"all":[1250600,0]},"service":{"search":[850300,0],"chat":[400300,0]},"user":{"alice":[850000,0],'
    b'"carol":[300,0],"bob":[400100,0]},"model":{"gpt-4o":[1250600,0]}}}]},"projection_alerted_month":-1,'
    b'"late_dropped":0}'
)
PERSISTED_LIMITS = BudgetLimits(per_request_micros=None, user_limits=PeriodLimits(day=USD), max_keys_per_scope=3,
                                burn_fraction=None)
NOON = ms(2025, 3, 10, 12, 10)


def test_state_persisted_by_the_previous_version_loads_unchanged() -> None:
    ledger = BudgetLedger.from_bytes(PERSISTED_BEFORE_ARRAYS, PERSISTED_LIMITS)
    assert ledger.to_bytes() == PERSISTED_BEFORE_ARRAYS  # same format, same key order
    assert ledger.spent("user", "bob", "day", NOON) == 400_100
    assert ledger.spent("user", "bob", "hour", ms(2025, 3, 10, 11)) == 100
    assert ledger.spent("global", "all", "month", NOON) == 1_250_600
    # alice's 80 % was reported before the restart: only 90 % and 95 % are new.
    out = charge(ledger, [100_000], at=NOON, user="alice")
    assert [(c.scope, c.key, c.period, c.threshold) for c in out] == [
        ("user", "alice", "day", 0.9), ("user", "alice", "day", 0.95)
    ]  # fmt: skip


def test_restored_keys_keep_their_eviction_order() -> None:
    ledger = BudgetLedger.from_bytes(PERSISTED_BEFORE_ARRAYS, PERSISTED_LIMITS)
    charge(ledger, [10], at=NOON, user="dave")  # a 4th user: the least recently charged one goes
    assert ledger.spent("user", "alice", "day", NOON) == 0
    assert [ledger.spent("user", u, "day", NOON) for u in ("carol", "bob", "dave")] == [300, 400_100, 10]
    # Hour: previous-bucket keys go first, so the previous hour's bob is dropped, the current one stays.
    assert ledger.spent("user", "bob", "hour", ms(2025, 3, 10, 11)) == 0
    assert ledger.spent("user", "bob", "hour", NOON) == 400_000


def test_a_key_charged_again_is_evicted_last() -> None:
    ledger = BudgetLedger(BudgetLimits(max_keys_per_scope=3))
    for i, user in enumerate(["u1", "u2", "u3", "u1", "u4"]):
        charge(ledger, [5], at=T0 + i, user=user)
    assert [ledger.spent("user", u, "day", T0) for u in ("u1", "u2", "u3", "u4")] == [10, 0, 5, 5]


def test_many_users_over_hour_boundaries_sum_like_a_plain_loop() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    ts = ms(2025, 3, 31, 22, 30) + rng.integers(0, 3 * 3_600_000, n)  # three hours, across a month end
    users = np.array([f"u{i}" for i in range(2_000)] + [None], dtype=object)[rng.integers(0, 2_001, n)]
    costs = rng.integers(-1, 50_000, n)
    ledger = BudgetLedger(BudgetLimits(per_request_micros=None, global_limits=PeriodLimits()))
    for part in np.array_split(np.argsort(ts, kind="stable"), 40):  # batches in time order
        ledger.apply_batch(ts[part], np.full(part.shape[0], "s", dtype=object), users[part],
                           np.full(part.shape[0], "m", dtype=object), costs[part])
    expected: dict[tuple[str, int], int] = {}
    hours = ts - ts % 3_600_000
    for user, hour, cost in zip(users.tolist(), hours.tolist(), costs.tolist(), strict=True):
        if user is not None and cost >= 0:
            expected[(user, hour)] = expected.get((user, hour), 0) + cost
    last, previous = int(hours.max()), int(hours.max()) - 3_600_000  # only two hours are kept
    for user in ("u0", "u7", "u1999"):
        for hour in (previous, last):
            assert ledger.spent("user", user, "hour", hour) == expected.get((user, hour), 0)
    april = ms(2025, 4, 1)
    assert ledger.spent("user", "u7", "month", april) == sum(
        v for (u, h), v in expected.items() if u == "u7" and h >= april)


# -- persistence per bucket ------------------------------------------------------------------------------------


def persist(store: dict[str, bytes], drained: object, keep: object = None) -> list[str]:
    """Apply a drain to a key-value store like the worker's table (None deletes); ``keep`` filters which
    writes reach it (a crash part-way through). Returns the drained keys in order."""
    keys = []
    for key, blob in drained:  # type: ignore[attr-defined]
        keys.append(key)
        if keep is not None and not keep(key):  # type: ignore[operator]
            continue
        if blob is None:
            store.pop(key, None)
        else:
            store[key] = blob
    return keys


def restored(store: dict[str, bytes], limits: BudgetLimits, seed: int = 0, **options: object) -> BudgetLedger:
    """A ledger rebuilt from the store, blobs fed in a shuffled order (a table has no order)."""
    ledger = BudgetLedger(limits, **options)  # type: ignore[arg-type]
    items = list(store.items())
    for i in np.random.default_rng(seed).permutation(len(items)).tolist():
        key, blob = items[i]
        (ledger.restore_whole if key == "ledger" else ledger.restore)(key, blob)
    return ledger


def test_a_drain_writes_only_the_buckets_the_batches_charged() -> None:
    ledger = BudgetLedger(NO_REQUEST_LIMIT)
    charge_at(ledger, [100], T0, 0)
    assert sorted(k for k, _ in ledger.drain()) == ["day/1741564800000", "hour/1741608000000", "month/1740787200000"]
    charge_at(ledger, [7], ms(2025, 3, 10, 13, 5), 1)
    charge_at(ledger, [7], ms(2025, 3, 10, 12, 59), 2)  # a late call, into the previous hour
    assert sorted(k for k, _ in ledger.drain()) == [
        "day/1741564800000", "hour/1741608000000", "hour/1741611600000", "month/1740787200000"]
    charge_at(ledger, [7], ms(2025, 3, 10, 13, 6), 3)
    assert "hour/1741608000000" not in dict(ledger.drain())  # the 12:00 hour was not charged this time
    assert list(ledger.drain()) == []
    charge(ledger, [7], at=ms(2025, 3, 10, 13, 7))
    assert list(ledger.drain()) == []  # without an offset (a ledger persisted whole) nothing is tracked


def test_buckets_rotated_out_become_tombstones_and_a_restore_keeps_the_newest_two() -> None:
    ledger, store = BudgetLedger(NO_REQUEST_LIMIT), {}
    for offset, hour in enumerate((10, 11, 12)):
        charge_at(ledger, [5], ms(2025, 3, 10, hour), offset)
        drained = persist(store, ledger.drain())
    assert drained[-1] == "hour/1741600800000" and "hour/1741600800000" not in store  # 10:00 is gone
    # A crash after the 13:00 bucket was written but before 11:00's tombstone: the restore keeps 12 and 13.
    charge_at(ledger, [5], ms(2025, 3, 10, 13), 3)
    persist(store, ledger.drain(), keep=lambda key: not key.startswith("hour/17416044"))
    again = restored(store, NO_REQUEST_LIMIT)
    assert [again.spent("global", "all", "hour", ms(2025, 3, 10, h)) for h in (11, 12, 13)] == [0, 5, 5]
    assert dict(again.drain()) == {"hour/1741604400000": None}  # and it deletes the stale one
    assert again.spent("global", "all", "day", T0) == 20


def charge_at(ledger: BudgetLedger, costs: list[int], at: int | list[int], offset: int, user: str = "u1") -> list:
    n = len(costs)
    ts = np.array(at if isinstance(at, list) else [at + i for i in range(n)], dtype=np.int64)
    users = np.array([user] * n if isinstance(user, str) else user, dtype=object)
    return ledger.apply_batch(ts, np.array(["search"] * n, dtype=object), users, np.array(["gpt-4o"] * n, dtype=object),
                              np.array(costs, dtype=np.int64), offset=offset)


def test_a_replay_charges_only_the_buckets_persisted_before_it() -> None:
    """Crash after some buckets of a group were written: the replay must not charge those again and must
    charge the others, deciding the same crossings (same event time) for them; totals equal plain sums."""
    limits = BudgetLimits(per_request_micros=None, user_limits=PeriodLimits(hour=400_000, day=1_000_000))
    rng = np.random.default_rng(5)
    start = ms(2025, 3, 31, 22, 40)  # spans an hour and a month boundary
    batches = []
    for _ in range(24):
        n = int(rng.integers(5, 40))
        ts = np.sort(start + rng.integers(0, 90 * 60_000, n))
        batches.append((ts, np.array([f"u{i}" for i in rng.integers(0, 6, n)], dtype=object),
                        rng.integers(0, 30_000, n)))
    batches.sort(key=lambda b: int(b[0][0]))

    def run(ledger: BudgetLedger, offsets: range) -> dict[int, list]:
        return {o: charge_at(ledger, batches[o][2].tolist(), batches[o][0].tolist(), o, batches[o][1].tolist())
                for o in offsets}

    reference = run(BudgetLedger(limits), range(24))
    first, store = BudgetLedger(limits), {}
    for group in (range(0, 8), range(8, 16)):
        run(first, group)
        persist(store, first.drain())
    run(first, range(16, 20))  # this group's drain reaches the store only for hour buckets, then a crash
    lost = [key for key in persist(store, first.drain(), keep=lambda key: key.startswith("hour/"))
            if not key.startswith("hour/")]
    assert lost  # the day and month buckets of the last group were not persisted
    second = restored(store, limits, seed=3)
    replayed = run(second, range(16, 24))

    expected: dict[tuple[str, str, int], int] = {}
    for ts, users, costs in batches:
        for period in ("hour", "day", "month"):
            for user, start_ms, cost in zip(users.tolist(), bucket_starts(ts, period).tolist(), costs.tolist(),
                                            strict=True):
                expected[(user, period, start_ms)] = expected.get((user, period, start_ms), 0) + cost
    last = int(batches[-1][0][-1])
    for (user, period, start_ms), total in expected.items():
        if start_ms >= int(bucket_starts(np.array([last]), period)[0]):  # the current buckets
            assert second.spent("user", user, period, start_ms) == total, (user, period, start_ms)
    for offset in range(16, 20):
        again = [(c.key, c.period, c.threshold, c.at_ms) for c in replayed[offset]]
        assert all(c.period != "hour" for c in replayed[offset])  # hour buckets already had these records
        assert again == [(c.key, c.period, c.threshold, c.at_ms) for c in reference[offset] if c.period != "hour"]
    for offset in range(20, 24):
        assert [(c.key, c.period, c.at_ms) for c in replayed[offset]] == [
            (c.key, c.period, c.at_ms) for c in reference[offset]]
    assert any(reference[o] for o in range(16, 20))  # the crossings compared above are not all empty


def test_state_persisted_whole_restores_and_the_next_drain_replaces_it() -> None:
    whole = struct.pack("<q", 41) + PERSISTED_BEFORE_ARRAYS  # what KeyedState wrote under budget/ledger
    ledger = BudgetLedger(PERSISTED_LIMITS)
    ledger.restore_whole("ledger", whole)
    assert ledger.to_bytes() == PERSISTED_BEFORE_ARRAYS
    assert charge_at(ledger, [100_000], NOON, 41, user="alice") == []  # offset 41 is already in it
    drained = list(ledger.drain())
    assert [key for key, _ in drained][-1] == "ledger" and drained[-1][1] is None  # deleted after the rest
    assert len([key for key, blob in drained if blob]) == 4 + 1  # 2 hours, day, month, and the meta record
    store: dict[str, bytes] = {"ledger": whole}
    persist(store, drained)
    again = restored(store, PERSISTED_LIMITS)
    assert again.to_bytes() == PERSISTED_BEFORE_ARRAYS  # same spend, levels and eviction order
    out = charge_at(again, [100_000], NOON, 42, user="alice")
    assert [(c.key, c.period, c.threshold) for c in out] == [("alice", "day", 0.9), ("alice", "day", 0.95)]


def test_a_bucket_written_after_the_whole_ledger_wins_in_any_restore_order() -> None:
    ledger = BudgetLedger(NO_REQUEST_LIMIT)
    charge_at(ledger, [100], T0, 1)
    whole = struct.pack("<q", 1) + ledger.to_bytes()
    charge_at(ledger, [50], T0 + 10, 2)
    newer_hour = dict(ledger.drain())["hour/1741608000000"]
    for seed in range(4):
        again = restored({"ledger": whole, "hour/1741608000000": newer_hour}, NO_REQUEST_LIMIT, seed=seed)
        assert again.spent("user", "u1", "hour", T0) == 150 and again.spent("user", "u1", "day", T0) == 100


def test_buckets_round_trip_any_key_name_and_keep_the_eviction_order() -> None:
    limits = BudgetLimits(per_request_micros=None, max_keys_per_scope=4)
    ledger, store = BudgetLedger(limits), {}
    # "a\x00b" is evicted by "d", then comes back and evicts "é"
    for offset, user in enumerate(["a\x00b", "é", "", "c", "d", "a\x00b"]):
        charge_at(ledger, [10 + offset], T0 + offset, offset, user=user)
    persist(store, ledger.drain())
    again = restored(store, limits)
    assert again.to_dict() == ledger.to_dict()
    charge_at(again, [1], T0 + 10, 6, user="e")  # evicts the least recently charged: ""
    assert [again.spent("user", u, "day", T0) for u in ("", "c", "d", "a\x00b", "e")] == [0, 13, 14, 15, 1]


def test_every_drain_restores_the_names_as_they_are_then_while_users_come_and_go() -> None:
    """A drain writes a bucket's user names without encoding the ones already written again, as long as no name was
    evicted; each drain must still restore exactly the names and spend of that moment: through new users, evictions,
    evicted slots taken by newcomers, and a name holding a NUL (written as JSON)."""
    limits = BudgetLimits(per_request_micros=None, max_keys_per_scope=12)
    ledger, store = BudgetLedger(limits), {}
    arrivals = [[f"u{i}" for i in range(5)], ["u5", "u6"], [], ["u0", "u7", "u8", "u9"], ["u10", "u11", "u12", "u13"],
                ["u14", "u15"], ["u16"], ["a\x00b", "u17"], ["u2", "u18"], ["u19"]]
    for offset, users in enumerate(arrivals):
        charge_at(ledger, [7 + offset] * max(len(users), 1), T0 + offset, offset,
                  user=users or "u1")  # type: ignore[arg-type]
        persist(store, ledger.drain())
        assert restored(store, limits).to_dict() == ledger.to_dict(), offset


def test_a_table_written_again_after_its_freed_slots_were_taken_names_the_newcomers() -> None:
    table = SpendTable()
    for names in (["a", "b", "c"], ["d"]):
        slots = table.slots(names)
        table.spent[slots] += 5
        assert SpendTable.from_bytes(table.to_bytes(), 0).to_dict() == table.to_dict()
    table.evict_oldest(2)
    slots = table.slots(["e", "f"])  # the two freed slots, taken again: no slot is free now
    table.spent[slots] += 3
    assert SpendTable.from_bytes(table.to_bytes(), 0).to_dict() == table.to_dict()


RUNAWAY_LIMITS = BudgetLimits(per_request_micros=None, global_limits=PeriodLimits(), projection_limit_micros=None,
                              user_limits=PeriodLimits(hour=100 * USD), burn_fraction=0.2)  # $20 within a minute


def test_a_user_spending_a_fifth_of_its_hour_budget_within_a_minute_is_a_runaway_seen_at_once() -> None:
    ledger = BudgetLedger(RUNAWAY_LIMITS)
    steady = [charge(ledger, [19 * USD], at=ms(2025, 3, 10, 12, m), user="steady") for m in range(4)]
    assert steady == [[], [], [], []]  # $19 a minute: 76 % of the hour by now, but never a fifth within a minute
    start = ms(2025, 3, 10, 12, 10, 5)
    out = charge(ledger, [1 * USD] * 30, at=[start + 1000 * i for i in range(30)], user="batch-job", service="docs")
    [burn] = out  # $1 a second: the 20th call reaches $20, 19 s in, long before the hour's thresholds
    assert (burn.period, burn.key, burn.at_ms, burn.severity) == ("minute", "batch-job", start + 19_000, "ERROR")
    assert (burn.service, burn.model) == ("docs", "gpt-4o")  # the series it spends on
    obs = burn.observation()
    assert obs.rule == "budget_burn" and dict(obs.labels)["bucket"] == "2025-03-10T12:00Z"
    # The next minute burns again: a crossing of its own, the same alert (one per key and hour).
    again = charge(ledger, [1 * USD] * 30, at=[ms(2025, 3, 10, 12, 11, 5) + 1000 * i for i in range(30)],
                   user="batch-job", service="docs")
    assert [c.period for c in again] == ["minute"]
    policy = AlertPolicy()
    assert len(policy.observe(obs)) == 1 and policy.observe(again[0].observation()) == []


def test_calls_too_late_for_the_minutes_kept_still_charge_their_hour_and_are_not_dropped() -> None:
    ledger = BudgetLedger(RUNAWAY_LIMITS)
    charge(ledger, [USD], at=ms(2025, 3, 10, 12, 30))
    charge(ledger, [USD], at=ms(2025, 3, 10, 12, 5))  # 25 minutes late
    assert ledger.spent("user", "u1", "hour", T0) == 2 * USD and ledger.late_dropped == 0


def test_a_runaway_in_a_partition_minutes_behind_the_others_is_still_a_burn() -> None:
    """The fleet ledger hears partitions at their own pace: one read to 12:15 before another's 12:06 runaway."""
    ledger = BudgetLedger(RUNAWAY_LIMITS)
    assert charge(ledger, [USD // 10] * 16, at=[ms(2025, 3, 10, 12, m) for m in range(16)], user="ahead") == []
    runaway = [ms(2025, 3, 10, 12, 6, 10) + 1000 * i for i in range(30)]
    [burn] = charge(ledger, [USD] * 30, at=runaway, user="batch-job")
    assert (burn.period, burn.key, burn.at_ms) == ("minute", "batch-job", runaway[19])
    # More than ten minutes behind the newest minute a call only charges its hour.
    assert charge(ledger, [25 * USD], at=ms(2025, 3, 10, 12, 2), user="late") == []
    assert ledger.spent("user", "late", "hour", T0) == 25 * USD and ledger.late_dropped == 0


def test_minute_spend_is_persisted_and_charged_once_on_a_replay() -> None:
    ledger, store = BudgetLedger(RUNAWAY_LIMITS), {}
    charge_at(ledger, [15 * USD], T0 + 1000, 0)
    persist(store, ledger.drain())
    assert any(key.startswith("minute/") for key in store)
    again = restored(store, RUNAWAY_LIMITS)
    assert charge_at(again, [15 * USD], T0 + 1000, 0) == []  # the replayed record: already counted
    [burn] = charge_at(again, [6 * USD], T0 + 2000, 1)  # $21 within the minute
    assert burn.period == "minute" and burn.spent_micros == 21 * USD


LAGGED_LIMITS = BudgetLimits(per_request_micros=None, projection_limit_micros=None,
                             global_limits=PeriodLimits(hour=150 * USD, day=300 * USD, month=500 * USD),
                             user_limits=PeriodLimits(hour=40 * USD), model_limits=PeriodLimits(hour=70 * USD),
                             burn_fraction=0.1)
LAG_START = ms(2025, 3, 31, 22, 52)  # the next 2.5 h cross hours, a day and a month
LAG_END = LAG_START + 150 * 60_000
MAX_LAG_MS = 8 * 60_000  # less than the ten burn minutes kept


def _source_batches(rng: np.random.Generator, source: int) -> list[tuple[np.ndarray, ...]]:
    """One partition's 10 s summaries, ~1 call a second, with a runaway user for three minutes. Partition 0
    starts at 22:52, the others at 23:00: heard late, its first calls are older than the hour the others opened."""
    batches = []
    for begin in range(LAG_START if source == 0 else ms(2025, 3, 31, 23), LAG_END, 10_000):
        n = int(rng.poisson(10))
        if not n:
            continue
        ts = np.sort(rng.integers(begin, begin + 10_000, n))
        cost = rng.integers(10_000, 60_000, n)
        runaway = ts - LAG_START - (30 + 40 * source) * 60_000
        cost[(runaway >= 0) & (runaway < 3 * 60_000)] *= 20  # ~$7 a minute for three minutes
        batches.append((ts, np.array([f"svc{source}"] * n, dtype=object),
                        rng.choice(["u0", "u1", "u2", "u3"], n).astype(object),
                        rng.choice(["gpt-4o", "claude"], n).astype(object), cost))
    return batches


def _crossings_and_spend(ledger: BudgetLedger, order: list[tuple[np.ndarray, ...]]) -> tuple[set, list]:
    crossings = {(c.scope, c.key, c.period, c.bucket_start_ms, c.threshold)
                 for batch in order for c in ledger.apply_batch(*batch)}
    spend = sorted((row["scope"], row["key"], row["period"], row["bucket_start_ms"], row["spent_micros"])
                   for row in ledger.snapshot(top=100))
    return crossings, spend


def _at_their_own_pace(rng: np.random.Generator, sources: list[list[tuple[np.ndarray, ...]]]) -> list:
    """Each partition's summaries in its order, the partitions up to ``MAX_LAG_MS`` behind a clock, each with a
    lag of its own that moves toward a new random target every ten minutes; then the laggards catch up."""
    lag = [MAX_LAG_MS] + [0] * (len(sources) - 1)
    target = list(lag)
    delivered = [0] * len(sources)
    out = []
    for clock in range(LAG_START, LAG_END + 10_000, 10_000):
        if (clock - LAG_START) % 600_000 == 0 and clock > LAG_START:
            target = rng.integers(0, MAX_LAG_MS + 1, len(sources)).tolist()
        for source in rng.permutation(len(sources)).tolist():
            lag[source] += int(np.clip(target[source] - lag[source], -30_000, 30_000))
            batches = sources[source]
            while delivered[source] < len(batches) and int(batches[delivered[source]][0][-1]) <= clock - lag[source]:
                out.append(batches[delivered[source]])
                delivered[source] += 1
    for source in rng.permutation(len(sources)).tolist():
        out.extend(sources[source][delivered[source]:])
    return out


def test_partitions_minutes_apart_cross_the_same_thresholds_as_one_ordered_stream() -> None:
    """The fleet ledger hears each partition in order but the partitions at their own pace, up to 8 minutes of
    event time apart. Whatever the pace, the same thresholds are crossed, every bucket holds the same spend and
    nothing is dropped as late, as when all calls arrive in event-time order."""
    for seed in range(2):
        rng = np.random.default_rng(seed)
        sources = [_source_batches(rng, source) for source in range(3)]
        ordered = sorted((batch for batches in sources for batch in batches), key=lambda b: int(b[0][0]))
        expected = _crossings_and_spend(BudgetLedger(LAGGED_LIMITS), ordered)
        assert {c[2] for c in expected[0]} == {"minute", "hour", "day", "month"}  # every period is exercised
        ledger = BudgetLedger(LAGGED_LIMITS)
        assert _crossings_and_spend(ledger, _at_their_own_pace(rng, sources)) == expected, f"seed {seed}"
        assert ledger.late_dropped == 0
