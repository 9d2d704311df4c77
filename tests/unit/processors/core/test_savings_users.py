"""Spend per user, kept per day and service in arrays (issue 16): the same report figures and the same persisted
bytes as the dict it replaced, a small bounded cost per user, and names forgotten with the days that used them."""

from __future__ import annotations

import json
import struct

import numpy as np

from llmpulse.processors.core.savings import (
    COUNTERS,
    DAY_MS,
    OTHER_USERS,
    DayUsage,
    SavingsConfig,
    SavingsTracker,
    Usage,
)
from tests.support.persisted import restored
from tests.support.priced_calls import DAY0, priced_calls


def _users_in_bytes(day: DayUsage) -> list[tuple[str, int]]:
    blob = day.to_bytes()
    (size,) = struct.unpack_from("<I", blob, 0)
    return list(json.loads(blob[4 : 4 + size])["users"].items())


def _charged(tracker: SavingsTracker, day: int) -> int:
    """Bytes of the spend arrays of every (day, service) kept for ``day``."""
    return sum(usage._spend.codes.nbytes + usage._spend.micros.nbytes + usage._spend.order.nbytes
               for key, usage in tracker.state.items() if int(key.split("\x1f")[0]) == day)


def test_spend_per_user_matches_summing_every_call_and_lists_users_in_first_charged_order() -> None:
    rng = np.random.default_rng(7)
    users = rng.integers(0, 300, 2000)
    rows = [{"user_hash": f"user-{u:03d}"} for u in users.tolist()]
    tracker = SavingsTracker(SavingsConfig(max_users=1000))
    for offset, start in enumerate(range(0, len(rows), 100)):
        tracker.update(*priced_calls(rows[start : start + 100]), offset=offset)

    expected: dict[str, int] = {}
    for u in users.tolist():
        expected[f"user-{u:03d}"] = expected.get(f"user-{u:03d}", 0) + 2500  # each call costs $0.0025
    [(_key, day)] = tracker.state.items()
    assert list(day.users.items()) == list(expected.items())  # first charged first, as the report lists ties
    assert _users_in_bytes(day) == list(expected.items())  # persisted as the dict was: name -> micro-dollars
    assert Usage.collect([tracker], DAY0, DAY0 + DAY_MS).users == {"chat": expected}


def test_a_day_restored_from_its_bytes_charges_on_as_the_day_it_was() -> None:
    day = DayUsage()
    day.charge_users(["a", "b", "c"], [1, 2, 3], max_users=4)
    again = DayUsage.from_bytes(day.to_bytes())
    for usage in (day, again):
        usage.charge_users(["d", "b", "e", "f"], [10, 20, 30, 40], max_users=4)  # d fills the cap: e and f share
    assert list(again.users.items()) == list(day.users.items()) == [
        ("a", 1), ("b", 22), ("c", 3), ("d", 10), (OTHER_USERS, 70)]
    assert again.to_bytes() == day.to_bytes()


def test_each_user_of_a_day_and_service_costs_16_bytes_and_a_name_is_kept_once() -> None:
    tracker = SavingsTracker(SavingsConfig(max_users=1000))
    services = ("chat", "search", "mail", "docs")
    rows = [{"user_hash": f"user-{u:03d}", "service": s} for u in range(800) for s in services]
    tracker.update(*priced_calls(rows), offset=1)
    assert _charged(tracker, DAY0 // DAY_MS) == 16 * 800 * len(services)
    assert len(tracker.user_names) == 800  # shared by the four services' days
    tomorrow = [{**row, "timestamp_ms": DAY0 + DAY_MS + 5} for row in rows[:400]]
    tracker.update(*priced_calls(tomorrow), offset=2)
    assert _charged(tracker, DAY0 // DAY_MS + 1) == 16 * 400
    assert len(tracker.user_names) == 800


def test_names_go_with_the_days_that_used_them_and_later_days_keep_their_figures() -> None:
    tracker = SavingsTracker(SavingsConfig(retention_days=2))
    tracker.update(*priced_calls([{"user_hash": f"old-{u}"} for u in range(50)] + [{"user_hash": "both"}]), offset=1)
    tracker.update(*priced_calls([{"user_hash": "both", "timestamp_ms": DAY0 + DAY_MS},
                                  {"user_hash": "new", "timestamp_ms": DAY0 + DAY_MS}]), offset=2)
    assert len(tracker.user_names) == 52
    tracker.update(*priced_calls([{"user_hash": "new", "timestamp_ms": DAY0 + 2 * DAY_MS}]), offset=3)  # DAY0 goes
    assert len(tracker.user_names) == 2
    usage = Usage.collect([tracker], DAY0, DAY0 + 3 * DAY_MS)
    assert usage.users == {"chat": {"both": 2500, "new": 5000}}
    tracker.update(*priced_calls([{"user_hash": "later", "timestamp_ms": DAY0 + 2 * DAY_MS}]), offset=4)
    assert Usage.collect([tracker], DAY0 + 2 * DAY_MS, DAY0 + 3 * DAY_MS).users == {
        "chat": {"new": 2500, "later": 2500}}


def test_a_restarted_tracker_reports_the_same_users_and_shares_their_names() -> None:
    tracker = SavingsTracker()
    rows = [{"user_hash": f"u{u % 7}", "service": ("chat", "search")[u % 2]} for u in range(40)]
    tracker.update(*priced_calls(rows), offset=1)
    again = restored(SavingsTracker(), tracker.state.drain())
    assert Usage.collect([again], DAY0, DAY0 + DAY_MS).users == Usage.collect([tracker], DAY0, DAY0 + DAY_MS).users
    assert len(again.user_names) == 7


def test_a_day_written_again_carries_the_latencies_added_since_and_the_same_bytes_as_a_fresh_encoding() -> None:
    # A day's sketches are encoded again only when they changed (their bytes are kept between writes): the sketch
    # that gained values must be written with them, the untouched one as before.
    day = DayUsage()
    day.add_counts("gpt-4o", "openai", np.ones(len(COUNTERS), dtype=np.int64)).add_many(np.array([0.5, 0.7, 0.9]))
    day.add_counts("claude", "anthropic", np.ones(len(COUNTERS), dtype=np.int64)).add_many(np.array([1.5, 2.5, 3.5]))
    first = day.to_bytes()
    day.add_counts("gpt-4o", "openai", np.ones(len(COUNTERS), dtype=np.int64)).add_many(np.array([4.0, 8.0]))
    second = day.to_bytes()

    restored_day = DayUsage.from_bytes(second)
    assert restored_day.latency[("gpt-4o", "openai")].count == 5
    assert restored_day.latency[("gpt-4o", "openai")].quantile(1.0) == 8.0
    assert restored_day.latency[("claude", "anthropic")].count == 3
    assert second != first
    assert second == DayUsage.from_bytes(second).to_bytes()  # what a day never encoded before writes


def test_days_before_the_newest_keep_no_encoded_sketches_and_a_late_call_is_still_written() -> None:
    # Kept sketch bytes only speed up the current day's rewrites; 35 days of them would only take memory.
    tracker = SavingsTracker()
    tracker.update(*priced_calls([{"latency_ms": 200.0}]), offset=0)
    [(first_key, first_day)] = tracker.state.items()
    first_day.to_bytes()  # the day is written: its sketch bytes are kept
    assert first_day._encoded

    tracker.update(*priced_calls([{"timestamp_ms": DAY0 + DAY_MS + 60_000}]), offset=1)  # the next day starts
    assert not first_day._encoded
    tracker.update(*priced_calls([{"latency_ms": 900.0}]), offset=2)  # a late call of the first day
    late = DayUsage.from_bytes(first_day.to_bytes())
    assert late.latency[("big", "p")].count == 2
    assert tracker.state.get(first_key) is first_day
