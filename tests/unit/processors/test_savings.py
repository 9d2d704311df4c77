"""Daily usage state and the model-routing savings estimate, against hand-computed answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.kpis import Kpi, kpi_rows
from llmpulse.processors.core.pricing import Rate
from llmpulse.processors.core.savings import (
    DAY_MS,
    INDEX,
    OTHER_USERS,
    DayUsage,
    SavingsConfig,
    SavingsTracker,
    ServiceSavings,
    Usage,
    UsageRow,
    estimate_savings,
)
from llmpulse.processors.core.sketch import LatencySketch
from tests.support import persisted
from tests.support.priced_calls import DAY0, PRICER, priced_calls


def _usage(tracker: SavingsTracker, days: int = 1) -> Usage:
    return Usage.collect([tracker], DAY0, DAY0 + days * DAY_MS)


def _mixed_traffic() -> tuple[CallColumns, np.ndarray]:
    easy_big = [{} for _ in range(10)]  # 100 in / 50 out on big: $0.0025 each
    hard_big = [{"input_tokens": 5000, "output_tokens": 800} for _ in range(5)]
    easy_small = [{"request_model": "small"} for _ in range(4)]
    failed = [{"status": "error", "input_tokens": 10, "output_tokens": 0} for _ in range(2)]
    return priced_calls(easy_big + hard_big + easy_small + failed)


def test_easy_calls_on_the_big_model_would_save_their_cost_minus_the_small_model_price() -> None:
    tracker = SavingsTracker()
    tracker.update(*_mixed_traffic(), offset=1)

    (chat,) = estimate_savings(_usage(tracker), PRICER.rate)

    big_easy, small_easy = 10 * 2500, 10 * 125  # micro-dollars: 100*10 + 50*30 = 2500; 100*0.5 + 50*1.5 = 125
    assert chat.target == "p/small"
    assert (chat.requests, chat.easy_calls) == (21, 14)  # hard and failed calls are never "easy"
    assert chat.savings_micros == big_easy - small_easy
    assert chat.easy_cost_micros == big_easy + 4 * 125
    hard = 5 * (5000 * 10 + 800 * 30)
    assert chat.cost_micros == big_easy + hard + 4 * 125 + 2 * 100  # errors are priced (10 input tokens)
    assert chat.as_dict()["savings_ratio"] == pytest.approx(chat.savings_micros / chat.cost_micros)


def test_thresholds_decide_what_is_easy() -> None:
    tracker = SavingsTracker(SavingsConfig(easy_max_input_tokens=50))
    tracker.update(*_mixed_traffic(), offset=1)
    (chat,) = estimate_savings(_usage(tracker), PRICER.rate)
    assert chat.easy_calls == 0 and chat.savings_micros == 0


def test_configured_target_is_used_and_calls_already_cheaper_are_not_moved() -> None:
    tracker = SavingsTracker()
    tracker.update(*_mixed_traffic(), offset=1)
    (chat,) = estimate_savings(_usage(tracker), PRICER.rate, targets=("p/mid",))
    assert chat.target == "p/mid"
    # big easy calls move to mid (100*2 + 50*6 = 500 each); the small calls are cheaper than mid and stay put.
    assert chat.savings_micros == 10 * (2500 - 500)
    assert chat.routed_easy_cost_micros == 10 * 500 + 4 * 125


def test_unknown_target_prices_give_no_estimate() -> None:
    tracker = SavingsTracker()
    tracker.update(*_mixed_traffic(), offset=1)
    (chat,) = estimate_savings(_usage(tracker), PRICER.rate, targets=("nobody/knows",))
    assert chat.target is None and chat.savings_micros == 0


def test_replayed_offset_changes_nothing_and_state_survives_a_restore() -> None:
    calls, cost = _mixed_traffic()
    tracker = SavingsTracker()
    tracker.update(calls, cost, offset=7)
    tracker.update(calls, cost, offset=7)  # at-least-once redelivery
    restored = persisted.restored(SavingsTracker(), tracker.state.drain())
    for state in (tracker, restored):
        (chat,) = estimate_savings(_usage(state), PRICER.rate)
        assert chat.requests == 21
    restored.update(calls, cost, offset=8)
    (chat,) = estimate_savings(_usage(restored), PRICER.rate)
    assert chat.requests == 42


def test_usage_keeps_latency_percentiles_per_model_across_days() -> None:
    tracker = SavingsTracker()
    slow = [{"latency_ms": float(ms), "timestamp_ms": DAY0 + (ms % 2) * DAY_MS} for ms in range(1, 1001)]
    tracker.update(*priced_calls(slow), offset=1)
    usage = _usage(tracker, days=2)
    row = usage.rows[("chat", "big", "p")]
    assert row["requests"] == 1000
    p50, p99 = row.latency.quantiles([0.5, 0.99])
    assert p50 == pytest.approx(0.5, rel=0.02) and p99 == pytest.approx(0.99, rel=0.02)
    assert _usage(tracker, days=1).rows[("chat", "big", "p")]["requests"] == 500  # one day only


def test_old_days_are_dropped_once_past_retention() -> None:
    tracker = SavingsTracker(SavingsConfig(retention_days=3))
    tracker.update(*priced_calls([{}]), offset=1)
    tracker.update(*priced_calls([{"timestamp_ms": DAY0 + 5 * DAY_MS}]), offset=2)
    tracker.update(*priced_calls([{}]), offset=3)  # late call for an evicted day: ignored, not resurrected
    assert _usage(tracker).rows == {}
    assert [key for key, blob in tracker.state.drain() if blob is None]  # a tombstone for the changelog
    assert Usage.collect([tracker], DAY0, DAY0 + 6 * DAY_MS).rows[("chat", "big", "p")]["requests"] == 1


def test_user_spend_is_summed_and_bounded() -> None:
    tracker = SavingsTracker(SavingsConfig(max_users=2))
    rows = [{"user_hash": f"u{i % 3}"} for i in range(9)] + [{"user_hash": None}]
    tracker.update(*priced_calls(rows), offset=1)
    users = _usage(tracker).users["chat"]
    assert sum(users.values()) == 9 * 2500  # the call without a user is charged to nobody
    assert len(users) == 3 and users[OTHER_USERS] == 3 * 2500


# One (day, service) object as persisted before users were charged in bulk (max_users=2: u3 went to "(other)").
PERSISTED_DAY = (
    b'p\x00\x00\x00{"a":0.01,"rows":[["big","p",[3,0,0,0,0,0,0,0,0,7500,0,0,0,0,0,0]]],"users":{"u1":5001,'
    b'"u2":2500,"(other)":100}}U\x00\x00\x00LSK1{\x14\xaeG\xe1z\x84?\x00\x08\x00\x00\xfdJ\x81Z\xbfR\x10\x00'
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x8d\xff\xff\xff\xff\xff\xff\xffgfffff\xe6?\x9a\x99\x99\x99\x99\x99\xb9?"
    b"\x9a\x99\x99\x99\x99\x99\xd9?G\x00\x00\x00\x80\x00\x00\x00\x10\x00\x00\x00\x02\x00\x03\x00\x00\x00\x01"
    b"\x01\x01"
)


def test_a_day_persisted_by_the_previous_version_loads_and_keeps_its_cap() -> None:
    day = DayUsage.from_bytes(PERSISTED_DAY)
    again = DayUsage.from_bytes(day.to_bytes())  # written anew (its sketch in the current format), same content
    assert again.to_bytes() == day.to_bytes() and again.users == day.users
    [(key, sketch)] = day.latency.items()
    assert key == ("big", "p") and sketch.count == again.latency[key].count
    assert sketch.quantiles((0.5, 0.99)).tolist() == again.latency[key].quantiles((0.5, 0.99)).tolist()
    assert day.rows[("big", "p")][INDEX["cost_micros"]] == 7500
    day.charge_users(["u4", "u2"], [7, 10], max_users=2)  # u4 is new and the cap is full
    assert day.users == {"u1": 5001, "u2": 2510, OTHER_USERS: 107}


def test_the_first_new_users_keep_their_names_when_the_cap_fills() -> None:
    day = DayUsage()
    day.charge_users(["a", "b"], [1, 2], max_users=3)
    day.charge_users(["c", "a", "d", "e"], [10, 20, 30, 40], max_users=3)
    assert list(day.users.items()) == [("a", 21), ("b", 2), ("c", 10), (OTHER_USERS, 70)]
    day.charge_users(["x", "x", "b"], [1, 1, 1], max_users=3)  # a repeated name is one user
    assert day.users == {"a": 21, "b": 3, "c": 10, OTHER_USERS: 72}


def test_user_spend_is_kept_per_day_and_service() -> None:
    tracker = SavingsTracker(SavingsConfig(max_users=2))
    rows = ([{"user_hash": u} for u in ("u1", "u2", "u3", "u1")]
            + [{"user_hash": "u3", "timestamp_ms": DAY0 + DAY_MS + 5}]
            + [{"user_hash": "u2", "service": "search"}])
    tracker.update(*priced_calls(rows), offset=1)
    today, tomorrow = _usage(tracker).users, Usage.collect([tracker], DAY0 + DAY_MS, DAY0 + 2 * DAY_MS).users
    assert today == {"chat": {"u1": 5000, "u2": 2500, OTHER_USERS: 2500}, "search": {"u2": 2500}}
    assert tomorrow == {"chat": {"u3": 2500}}


def test_counts_only_usage_gives_the_same_savings_and_kpis_without_latency_or_users() -> None:
    """What every scrape computes (the savings gauges, the KPI rows) from counters alone: the same figures as the
    full usage a report reads, without merging latency sketches or summing every user's spend."""
    tracker = SavingsTracker()
    calls, cost = _mixed_traffic()
    tracker.update(calls, cost, offset=1)
    tracker.update(*priced_calls([{"service": "search", "request_model": "small", "labels": {"outcome": "follow"}},
                                  {"timestamp_ms": DAY0 + DAY_MS + 5, "user_hash": "u-2"}]), offset=2)
    full = Usage.collect([tracker], DAY0, DAY0 + 2 * DAY_MS)
    light = Usage.collect([tracker], DAY0, DAY0 + 2 * DAY_MS, counts_only=True)

    assert estimate_savings(light, PRICER.rate) == estimate_savings(full, PRICER.rate)
    kpis = (Kpi(name="cost_per_follow", outcome="follow"),)
    assert kpi_rows(light, kpis) == kpi_rows(full, kpis) and kpi_rows(full, kpis)[0]["outcomes"] == 1
    assert {key: row.counts.tolist() for key, row in light.rows.items()} == {
        key: row.counts.tolist() for key, row in full.rows.items()}
    assert full.users and not light.users
    assert full.rows[("chat", "big", "p")].latency.count > 0
    assert light.rows[("chat", "big", "p")].latency.count == 0


def _one_service_at_a_time(usage: Usage, rate_of: Any, targets: tuple[str, ...] = ()) -> list[ServiceSavings]:
    """The estimate as it was written first, one service at a time: the specification the array version keeps."""
    by_service: dict[str, list[UsageRow]] = {}
    for row in usage.rows.values():
        by_service.setdefault(row.service, []).append(row)
    out = []
    for service, rows in by_service.items():
        def total(name: str, rows: list[UsageRow] = rows) -> int:
            return int(sum(row[name] for row in rows))

        tokens = np.array([[max(r["easy_input_tokens"] - r["easy_cached_tokens"], 0), r["easy_output_tokens"],
                            r["easy_cached_tokens"]] for r in rows], dtype=np.float64)
        actual = np.array([r["easy_cost_micros"] for r in rows], dtype=np.float64)
        candidates = ([tuple(t.split("/", 1)) if "/" in t else ("", t) for t in targets] if targets
                      else sorted({(row.provider, row.model) for row in rows}))
        priced = [(c, rate) for c in candidates if (rate := rate_of(*c)) is not None]
        base = (service, total("requests"), total("easy"), total("cost_micros"), total("easy_cost_micros"))
        if not priced:
            out.append(ServiceSavings(base[0], None, *base[1:], base[4], 0))
            continue
        rates = np.array([[r.input, r.output, r.cached] for _, r in priced], dtype=np.float64).T
        routed = tokens @ rates / 1_000_000
        best = int(np.argmin(routed.sum(axis=0)))
        per_row = np.minimum(routed[:, best], actual)
        provider, model = priced[best][0]
        out.append(ServiceSavings(base[0], f"{provider}/{model}" if provider else model, *base[1:],
                                  round(float(per_row.sum())), round(float((actual - per_row).sum()))))
    return sorted(out, key=lambda s: (-s.savings_micros, s.service))


@pytest.mark.parametrize("seed", range(6))
def test_every_service_at_once_decides_what_one_service_at_a_time_decided(seed: int) -> None:
    rng = np.random.default_rng(seed)
    models = [("p", "big"), ("p", "small"), ("q", "mid"), ("q", "unpriced"), ("", "bare")]
    rates = {("p", "big"): Rate(10_000_000, 30_000_000, 1_000_000), ("p", "small"): Rate(500_000, 1_500_000, 50_000),
             ("q", "mid"): Rate(3_000_000, 6_000_000, 300_000), ("", "bare"): Rate(2_000_000, 2_000_000, 0)}
    usage = Usage()
    for service in [f"svc-{k}" for k in range(40)]:
        for i in rng.choice(len(models), size=int(rng.integers(1, len(models) + 1)), replace=False).tolist():
            counts = np.zeros(len(INDEX), dtype=np.int64)
            for name in ("requests", "easy", "cost_micros", "easy_cost_micros", "easy_input_tokens",
                         "easy_output_tokens", "easy_cached_tokens"):
                counts[INDEX[name]] = int(rng.integers(0, 50_000))
            provider, model = models[i]
            usage.rows[(service, model, provider)] = UsageRow(service, model, provider, counts, LatencySketch())
    def rate_of(provider: str, model: str) -> Rate | None:
        return rates.get((provider, model))

    for targets in ((), ("p/small", "q/mid"), ("bare", "q/unpriced"), ("q/unpriced",)):
        assert estimate_savings(usage, rate_of, targets) == _one_service_at_a_time(usage, rate_of, targets)
    assert estimate_savings(Usage(), rate_of) == []
