"""Feedback joined to calls by request id, quality per version, quality alerts with the rollback suggestion."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.feedback_join import FeedbackColumns
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.quality import (
    BINARY,
    CALLS,
    CORRECT,
    IN_BINS,
    IN_HIST,
    LABEL_BINS,
    LABEL_HIST,
    RATED,
    SCORE,
    WIDTH,
    QualityConfig,
)
from llmpulse.processors.core.slots import series_key
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.wire.feedback import FeedbackDecoder
from llmpulse.producers.feedback import FeedbackEncoder, feedback_row
from tests.support import persisted
from tests.support.calls import decoded

NOW = int(time.time() * 1000)
FAST = QualityConfig(window_s=60, reference_s=120, slot_s=10, join_window_s=120, min_ratings=20,
                     min_version_ratings=20)


@pytest.fixture(scope="module")
def shared() -> tuple[Pricer, GuardMonitor]:
    return Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model())


def _engine(shared: tuple[Pricer, GuardMonitor], **quality: object) -> PartitionEngine:
    return PartitionEngine(0, EngineConfig(quality=replace(FAST, **quality)), *shared)  # type: ignore[arg-type]


def _calls(ids: list[str], ts: int, prompt_version: str = "v1", service: str = "support-bot"):  # type: ignore[no-untyped-def]
    rows = [{"event_id": i, "timestamp_ms": ts, "service": service, "provider": "openai",
             "request_model": "gpt-4o-mini", "status": "ok", "latency_ms": 300.0, "input_tokens": 400,
             "output_tokens": 80, "prompt_version": prompt_version} for i in ids]
    return decoded(rows, NOW)


def _feedback(ids: list[str], correct: np.ndarray, ts: int, service: str = "support-bot") -> FeedbackColumns:
    rows = [feedback_row(i, correct=bool(c), source="review", timestamp_ms=ts) for i, c in zip(ids, correct,
                                                                                                 strict=True)]
    data = FeedbackEncoder("t").encode(service, rows)  # type: ignore[arg-type]
    feedback, refused = FeedbackDecoder().decode(data)
    assert not refused and feedback is not None
    return feedback


def _accuracy(engine: PartitionEngine, version: str, now: int) -> float | None:
    return next(row["accuracy"] for row in engine.quality.figures(now) if row["prompt_version"] == version)


def test_feedback_joins_its_call_in_either_order_and_a_replay_counts_nothing_twice(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    ids = [f"r{i}" for i in range(40)]
    engine.process(_calls(ids[:20], NOW - 5000), offset=0, now_ms=NOW)
    engine.process_feedback(_feedback(ids, np.arange(40) % 4 != 0, NOW - 4000), offset=1, now_ms=NOW)
    assert engine.quality.joined == 20  # the other 20 calls have not arrived yet: pending
    engine.process(_calls(ids[20:], NOW - 3000), offset=2, now_ms=NOW)
    assert engine.quality.joined == 40
    assert _accuracy(engine, "v1", NOW) == pytest.approx(0.75)
    before = engine.drain_state()
    engine.process_feedback(_feedback(ids, np.ones(40), NOW - 4000), offset=1, now_ms=NOW)  # replays
    engine.process(_calls(ids[20:], NOW - 3000), offset=2, now_ms=NOW)
    assert _accuracy(engine, "v1", NOW) == pytest.approx(0.75)

    restored = persisted.restored(_engine(shared), before)  # the persisted state rebuilds the same figures
    assert _accuracy(restored, "v1", NOW) == pytest.approx(0.75)
    assert restored.quality.versions_of("support-bot")["gpt-4o-mini@v1"]["ratings"] == 40


def test_feedback_for_a_call_outside_the_join_window_is_not_joined(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    engine.process(_calls(["old"], NOW - 200_000), offset=0, now_ms=NOW)
    engine.process_feedback(_feedback(["old"], np.ones(1), NOW), offset=1, now_ms=NOW)
    assert engine.quality.joined == 0
    assert engine.quality.pending.get("pending").expired == 1  # type: ignore[union-attr]


def _run_versions(engine: PartitionEngine, rng: np.random.Generator) -> list:  # type: ignore[type-arg]
    """v1 answers right 93% of the time for 2 minutes, then v2 takes over and gets 60% right."""
    events, offset = [], 0
    for second in range(0, 180, 5):
        version, accuracy = ("v1", 0.93) if second < 120 else ("v2", 0.60)
        ts = NOW - 180_000 + second * 1000
        ids = [f"{second}-{i}" for i in range(20)]
        events += engine.process(_calls(ids, ts, version), offset=offset, now_ms=NOW).alerts
        outcome = engine.process_feedback(_feedback(ids, rng.random(20) < accuracy, ts + 500), offset=offset + 1,
                                          now_ms=NOW)
        events += outcome.alerts
        events += [("route", r) for r in outcome.routes]
        offset += 2
    return events


def test_quality_drop_after_a_version_change_names_the_version_to_roll_back_to(shared) -> None:  # type: ignore[no-untyped-def]
    events = _run_versions(_engine(shared), np.random.default_rng(3))
    firing = {e.rule: e for e in events if not isinstance(e, tuple) and e.status == "firing"}
    assert {"quality_drop", "concept_drift"} <= set(firing)
    drop = firing["quality_drop"]
    assert drop.labels["version"] == "gpt-4o-mini@v2" and drop.labels["rollback_to"] == "gpt-4o-mini@v1"
    assert "roll back to gpt-4o-mini@v1" in drop.summary
    assert "from gpt-4o-mini@v2 to gpt-4o-mini@v1" in drop.mitigation
    assert "concept drift" in firing["concept_drift"].summary
    assert "inputs stayed the same" in firing["concept_drift"].summary
    assert not [e for e in events if isinstance(e, tuple)]  # rollback routing is off by default


def test_opt_in_rollback_publishes_one_route_back_per_cooldown(shared) -> None:  # type: ignore[no-untyped-def]
    events = _run_versions(_engine(shared, rollback_enabled=True), np.random.default_rng(3))
    routes = [r for e in events if isinstance(e, tuple) for r in e[1:]]
    assert len(routes) == 1  # quality_drop and concept_drift both fire: the cooldown lets one decision through
    assert (routes[0].service, routes[0].from_version, routes[0].to_model, routes[0].to_prompt_version) == (
        "support-bot", "gpt-4o-mini@v2", "gpt-4o-mini", "v1")


def _rate(engine: PartitionEngine, ids: list[str], correct: np.ndarray, ts: int, offset: int,
          service: str = "support-bot") -> list:  # type: ignore[type-arg]
    """Calls then their feedback (two records); the alert events they decide."""
    events = engine.process(_calls(ids, ts, service=service), offset=offset, now_ms=ts).alerts
    return events + engine.process_feedback(_feedback(ids, correct, ts + 1, service), offset=offset + 1,
                                            now_ms=ts + 1).alerts


def test_a_record_judges_the_series_of_the_services_it_changed_and_the_timer_judges_every_one(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    t0 = NOW - 600_000
    _rate(engine, [f"a{i}" for i in range(30)], np.ones(30), t0, offset=0, service="support-bot")
    _rate(engine, [f"b{i}" for i in range(30)], np.ones(30), t0, offset=2, service="search")
    assert engine.quality.observe_changed(t0 + 5000) == []  # the engine judged (and forgot) each record's changes
    engine.quality.on_calls(_calls(["a-late"], t0 + 5000, service="support-bot"), offset=4)
    changed = engine.quality.observe_changed(t0 + 5000)
    assert {o.labels[0][1] for o in changed} == {"support-bot"}
    assert engine.quality.observe_changed(t0 + 5000) == []  # nothing changed since
    everything = engine.quality.observe(t0 + 5000)
    assert {o.labels[0][1] for o in everything} == {"support-bot", "search"}

    restored = persisted.restored(_engine(shared), engine.drain_state())  # the service index is rebuilt from it
    assert sorted(restored.quality.observe(t0 + 5000), key=repr) == sorted(everything, key=repr)


def test_the_timer_fires_a_quality_drop_when_good_ratings_leave_the_window_and_resolves_it(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared, window_s=300, reference_s=600)
    t0 = (NOW - 3_600_000) // 10_000 * 10_000  # on a slot boundary
    events = _rate(engine, [f"good{i}" for i in range(100)], np.ones(100), t0, offset=0)
    events += _rate(engine, [f"bad{i}" for i in range(24)], np.zeros(24), t0 + 30_000, offset=2)
    assert not events  # 100 right of 124: accuracy 0.81, above 0.80
    # No new records: as the window moves past the good ratings, only the 24 wrong ones are left in it.
    fired = [e for tick in range(t0 + 35_000, t0 + 320_000, 5000) for e in engine.tick(tick)
             if e.rule == "quality_drop"]
    assert [(e.status, e.labels["version"]) for e in fired] == [("firing", "gpt-4o-mini@v1")]
    assert fired[0].started_at_ms == t0 + 305_000  # the first tick whose window no longer holds t0's slot
    # Good ratings again: quality clears on that record, and the timer resolves it after the hold time.
    events = _rate(engine, [f"again{i}" for i in range(100)], np.ones(100), t0 + 320_000, offset=4)
    assert not [e for e in events if e.rule == "quality_drop"]
    resolved = [e for tick in range(t0 + 325_000, t0 + 460_000, 5000) for e in engine.tick(tick)
                if e.rule == "quality_drop"]
    assert [(e.status, e.alert_id) for e in resolved] == [("resolved", fired[0].alert_id)]
    assert resolved[0].updated_at_ms - (t0 + 320_001) >= 120_000


def test_a_quality_alert_the_timer_fires_yields_its_route_back_decision(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared, window_s=300, reference_s=600, rollback_enabled=True)
    t0 = NOW - 3_600_000
    _rate(engine, [f"v1-{i}" for i in range(40)], np.ones(40), t0, offset=0)  # v1: every answer right
    engine.process(_calls([f"v2-{i}" for i in range(100)], t0 + 60_000, "v2"), offset=2, now_ms=t0 + 60_000)
    feedback = _feedback([f"v2-{i}" for i in range(100)], np.arange(100) >= 19, t0 + 60_001)
    assert not engine.process_feedback(feedback, offset=3, now_ms=t0 + 60_001).alerts  # 81 of 100 right
    engine.process(_calls(["v2-late"], t0 + 90_000, "v2"), offset=4, now_ms=t0 + 90_000)
    assert engine.drain_timer_routes() == []
    for tick in range(t0 + 95_000, t0 + 400_000, 5000):
        engine.tick(tick)
    routes = engine.drain_timer_routes()
    assert [(r.from_version, r.to_version) for r in routes] == [("gpt-4o-mini@v2", "gpt-4o-mini@v1")]
    assert engine.drain_timer_routes() == []


def _joins(state: list[tuple[str, bytes | None]]) -> dict[str, bytes | None]:
    return {key: blob for key, blob in state if key.startswith("qjoin/")}


def test_a_write_holds_only_the_calls_its_join_slot_gained_and_the_slots_parts_restore_whole(shared) -> None:  # type: ignore[no-untyped-def]
    """A join slot rewritten whole after every record wrote each call again with every later record of its slot
    (~0.7 MB a write at one record a group); a write now carries only the slot's new calls."""
    engine = _engine(shared)
    first, second = [f"a{i}" for i in range(30)], [f"b{i}" for i in range(20)]
    engine.process(_calls(first, NOW - 5000), offset=0, now_ms=NOW)
    written = _joins(engine.drain_state())
    engine.process(_calls(second, NOW - 4000), offset=1, now_ms=NOW)  # the same 10 s slot
    later = _joins(engine.drain_state())

    assert len(written) == 1 and len(later) == 1 and written.keys() != later.keys()
    (blob,), (more,) = written.values(), later.values()
    assert blob is not None and more is not None
    assert len(more) < len(blob)  # 20 calls, not 50
    restored = _engine(shared)
    for key, part in {**written, **later}.items():
        restored.restore(key, part)  # type: ignore[arg-type]
    restored.process_feedback(_feedback(first + second, np.ones(50), NOW - 3000), offset=2, now_ms=NOW)
    assert restored.quality.joined == 50


def test_a_replayed_record_adds_no_call_its_slot_has_and_a_lost_write_is_made_again(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)
    first, second = [f"c{i}" for i in range(10)], [f"d{i}" for i in range(10)]
    engine.process(_calls(first, NOW - 5000), offset=0, now_ms=NOW)
    written = _joins(engine.drain_state())
    engine.process(_calls(second, NOW - 5000), offset=1, now_ms=NOW)
    lost = _joins(engine.drain_state())  # the crash came before this write reached the broker

    restarted = _engine(shared)
    for key, blob in written.items():
        restarted.restore(key, blob)  # type: ignore[arg-type]
    restarted.process(_calls(first, NOW - 5000), offset=0, now_ms=NOW)  # the replay: already absorbed
    restarted.process(_calls(second, NOW - 5000), offset=1, now_ms=NOW)
    again = _joins(restarted.drain_state())

    assert again.keys() == lost.keys()  # the lost write, under the same key
    restarted.process_feedback(_feedback(first + second, np.ones(20), NOW - 4000), offset=2, now_ms=NOW)
    assert restarted.quality.joined == 20
    assert sum(len(slot) for _start, slot in restarted.quality.joins.items()) == 20  # no call twice


def test_a_dropped_join_slot_deletes_every_write_it_was_persisted_in(shared) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(shared)  # join window 120 s: a slot goes once calls 240 s newer arrive
    written = []
    for offset, call in enumerate(["e0", "e1", "e2"]):  # one slot, written after each record
        engine.process(_calls([call], NOW - 400_000), offset=offset, now_ms=NOW)
        written += [key for key, blob in _joins(engine.drain_state()).items() if blob is not None]
    engine.process(_calls(["e3"], NOW - 100_000), offset=3, now_ms=NOW)

    deleted = [key for key, blob in _joins(engine.drain_state()).items() if blob is None]

    assert len(written) == 3 and sorted(deleted) == sorted(written)


def test_join_slots_persisted_in_the_earlier_layouts_still_join(shared) -> None:  # type: ignore[no-untyped-def]
    """Before the append-only writes a slot was persisted whole (``<start>``), then in parts by record range
    (``<start>.<part>``): both are read as parts of their slot."""
    engine = _engine(shared)
    ids = [f"f{i}" for i in range(30)]
    engine.process(_calls(ids[:20], NOW - 5000), offset=0, now_ms=NOW)
    (key, whole), = _joins(engine.drain_state()).items()
    engine.process(_calls(ids[20:], NOW - 5000), offset=200, now_ms=NOW)
    (_, part), = _joins(engine.drain_state()).items()
    start = key.removeprefix("qjoin/").partition("+")[0]

    restored = _engine(shared)
    restored.restore(f"qjoin/{start}", whole)  # type: ignore[arg-type]
    restored.restore(f"qjoin/{start}.1", part)  # type: ignore[arg-type]
    restored.process_feedback(_feedback(ids, np.ones(30), NOW - 4000), offset=201, now_ms=NOW)
    assert restored.quality.joined == 30


def test_each_call_and_joined_rating_adds_its_columns_to_its_series_slot(shared) -> None:  # type: ignore[no-untyped-def]
    """What a record adds to each (series, slot): a call its count and input-size bin, a joined rating its count,
    score, whether it was binary and correct, and its score bin."""
    engine, rng = _engine(shared), np.random.default_rng(7)
    slot_ms = int(FAST.slot_s * 1000)
    n = 120
    ids, services = [f"q{i}" for i in range(n)], [f"svc-{i % 3}" for i in range(n)]
    stamps = (NOW - 40_000 + rng.integers(0, 30_000, n)).tolist()
    tokens = rng.integers(1, 20_000, n).tolist()
    kinds = rng.integers(0, 3, n).tolist()  # rated 1..5, judged correct or not, or no feedback
    ratings, correct = rng.integers(1, 6, n).tolist(), (rng.random(n) < 0.6).tolist()
    rows = [feedback_row(ids[i], rating=ratings[i], timestamp_ms=stamps[i]) if kinds[i] == 0
            else feedback_row(ids[i], correct=correct[i], timestamp_ms=stamps[i]) for i in range(n) if kinds[i] < 2]
    feedback, refused = FeedbackDecoder().decode(FeedbackEncoder("t").encode("svc-0", rows))  # type: ignore[arg-type]
    assert not refused and feedback is not None
    engine.process_feedback(feedback, offset=0, now_ms=NOW)  # first: it waits for its calls
    calls = decoded([{"event_id": ids[i], "timestamp_ms": stamps[i], "service": services[i], "provider": "openai",
                      "request_model": "gpt-4o-mini", "status": "ok", "latency_ms": 300.0,
                      "input_tokens": tokens[i], "output_tokens": 80} for i in range(n)], NOW)
    engine.process(calls, offset=1, now_ms=NOW)

    expected: dict[tuple[str, int], np.ndarray] = {}
    for i in range(n):
        vector = expected.setdefault((services[i], stamps[i] // slot_ms * slot_ms), np.zeros(WIDTH))
        vector[CALLS] += 1
        vector[IN_HIST + min(max(int(np.floor(np.log2(tokens[i]))) - 5, 0), IN_BINS - 1)] += 1
        if kinds[i] < 2:
            score = (ratings[i] - 1) / 4 if kinds[i] == 0 else float(correct[i])
            vector[RATED] += 1
            vector[SCORE] += score
            vector[BINARY] += kinds[i] == 1
            vector[CORRECT] += kinds[i] == 1 and score >= 0.5
            vector[LABEL_HIST + min(int(score * LABEL_BINS), LABEL_BINS - 1)] += 1
    found = {}
    for service in sorted(set(services)):
        slots = engine.quality.state.get(series_key((service, "gpt-4o-mini", None, None, None)))
        assert slots is not None
        found.update({(service, start): vector for start, vector in slots.slots.items()})
    assert found.keys() == expected.keys()
    for key, vector in expected.items():
        assert found[key].tolist() == vector.tolist(), key
