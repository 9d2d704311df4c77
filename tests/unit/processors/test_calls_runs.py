"""The calls agent absorbs runs of records as one batch each, and a replay after a crash cuts the same runs.

A worker that sent a run's output (its fleet summary, its alerts) and died before persisting the state that
covers it must, when restarted, decide that output again exactly: the fleet stage drops a summary whose offset
it already applied, and an alert's id holds the event time its run decided at. These tests drive the real
``CallsAgent.process_group`` and ``EngineStore`` against in-memory tables, crash between the output of a group
and its persist, and replay in groups of other sizes.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from llmpulse.processors import configure
from llmpulse.processors.agents.calls import CallsAgent
from llmpulse.processors.core.engine import CURSOR_KEY, RUN_PLAN_KEY, PartitionEngine
from llmpulse.processors.core.fleet import FleetConfig
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.run_plan import MAX_HOLDS, MAX_RUN_SPAN_MS, RunPlan
from llmpulse.processors.engine_store import EngineStore
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder

SETTINGS = ProcessorSettings()
CALLS_PER_RECORD = 20
RECORDS = 40
FAILING_FROM = 20  # records from here on are errors of one service: an error-rate alert fires in their group


def _done() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class Table:
    """A faust table's ``data`` and changelog; every write is delivered at once."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})

    def send_changelog(self, partition: int | None, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> asyncio.Future[None]:
        return _done()


class Emitter:
    """What the agent sends: fleet summaries and alerts, in order."""

    def __init__(self) -> None:
        self.summaries: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []

    async def send_alerts(self, events: list[Any], partition: int, wait: bool = False) -> None:
        self.alerts += [event.to_record() for event in events]

    async def send_fleet_summary(self, summary: bytes) -> asyncio.Future[None]:
        self.summaries.append(json.loads(summary))
        return _done()

    async def send_routes(self, decisions: list[Any]) -> list[asyncio.Future[None]]:
        return []

    async def send_dead_letter(self, refused: Any, topic: str, partition: int, offset: int) -> asyncio.Future[None]:
        raise AssertionError(f"no record of this test is refused: {refused}")


class Ownership:
    def __init__(self) -> None:
        self.rewinds: list[int] = []

    def owns(self, partition: int, lane: str = "") -> bool:
        return True

    async def rewind(self, partition: int, cursor: Any, lane: str = "") -> None:
        self.rewinds.append(cursor.next_offset)


def _records() -> list[bytes]:
    """Records of 20 calls each; from FAILING_FROM on, service "chat" fails every call."""
    start = int(time.time() * 1000) - 600_000
    encoder = BatchEncoder("t")
    records = []
    for r in range(RECORDS):
        failing = r >= FAILING_FROM
        rows = [{"event_id": f"e{r}-{i}", "timestamp_ms": start + (r * CALLS_PER_RECORD + i) * 10,  # 8 s in all
                 "service": "chat", "provider": "openai", "request_model": "gpt-4o-mini",
                 "status": "error" if failing else "ok", "error_type": "server_error" if failing else None,
                 "latency_ms": 400.0 + i, "input_tokens": 100, "output_tokens": 50}
                for i in range(CALLS_PER_RECORD)]
        records.append(encoder.encode_batch(rows))
    return records


class Worker:
    """One worker's calls agent over one partition, restored from ``table``; state written at checkpoints
    ``checkpoint_ms`` apart (0: after every group)."""

    def __init__(self, table: Table, checkpoint_ms: int = 0, ledger_checkpoint_ms: int = 0) -> None:
        config = configure.engine_config(SETTINGS)
        guard = GuardMonitor(config.guarding)
        self.table = table
        self.store = EngineStore(table, Table(), lambda p: PartitionEngine(p, config, Pricer(), guard), FleetConfig(),
                                 checkpoint_ms=checkpoint_ms, ledger_checkpoint_ms=ledger_checkpoint_ms)
        self.emitter = Emitter()
        self.ownership = Ownership()
        limits = configure.validation_limits(SETTINGS)
        decoder = CallDecoder(limits, SETTINGS.validation.max_record_bytes, SETTINGS.validation.max_calls_per_batch)
        exporter = MetricsExporter(WorkerMetrics(CollectorRegistry(), SETTINGS.max_series_per_metric))
        self.agent = CallsAgent(self.store, self.emitter, self.ownership, decoder, exporter)  # type: ignore[arg-type]

    def feed(self, records: list[bytes], sizes: list[int]) -> None:
        """Deliver records from the persisted cursor in groups of ``sizes`` (the last size repeats), seeking
        back to the cursor whenever the agent rewinds, until every record is absorbed."""
        engine = self.store.engine(0)
        position = engine.cursor.next_offset or 0
        turn = 0
        while position < len(records):
            size = sizes[min(turn, len(sizes) - 1)]
            turn += 1
            self.group(records, position, size)
            position = engine.cursor.next_offset if self.ownership.rewinds else min(position + size, len(records))
            self.ownership.rewinds.clear()

    def group(self, records: list[bytes], first: int, size: int) -> None:
        events = [SimpleNamespace(message=SimpleNamespace(partition=0, offset=offset), value=records[offset])
                  for offset in range(first, min(first + size, len(records)))]
        asyncio.run(self.agent.process_group("llm-calls", events))


def _spend(summaries: list[dict[str, Any]]) -> int:
    """Micro-USD the fleet stage charges from these summaries: a summary at or below an applied offset is dropped."""
    applied, total = -1, 0
    for summary in summaries:
        if summary["o"] > applied:
            applied = summary["o"]
            total += sum(row[2] for row in summary["spend"])
    return total


def _crash(records: list[bytes], sizes: list[int], crash_group: int, checkpoint_ms: int = 0,
           ledger_checkpoint_ms: int = 0) -> tuple[Worker, dict[bytes, bytes], tuple[int, int], tuple[int, int]]:
    """A first attempt that dies after group ``crash_group`` sent its output and before it persisted. Returns
    the worker (every group run, for reference), the table as the crash left it, and where the crash group's
    summaries and alerts are in what the worker sent (first, end)."""
    first = Worker(Table(), checkpoint_ms, ledger_checkpoint_ms)
    position = 0
    for turn, size in enumerate(sizes):
        persisted = dict(first.table.data)
        before = len(first.emitter.summaries), len(first.emitter.alerts)
        first.group(records, position, size)
        position += size
        if turn == crash_group:
            summaries, alerts = (before[0], len(first.emitter.summaries)), (before[1], len(first.emitter.alerts))
            plan_key = f"0|{RUN_PLAN_KEY}".encode()
            crashed = {**persisted, plan_key: first.table.data[plan_key]}  # written before the group's output
    return first, crashed, summaries, alerts


FIRST_SIZES = [6, 9, 5, 10, 10]  # the crash group holds records 20..29: the failing service's first group


def test_a_replay_after_a_crash_sends_what_the_first_attempt_sent_and_charges_once() -> None:
    records = _records()
    first, crashed, summaries, alerts = _crash(records, FIRST_SIZES, crash_group=3)
    crash_summaries = first.emitter.summaries[slice(*summaries)]
    crash_alerts = first.emitter.alerts[slice(*alerts)]
    assert [s["o"] for s in crash_summaries] == [29], "records 20..29 are one run"
    assert any(a["status"] == "firing" for a in crash_alerts), "the failing service should fire in the crash group"

    replay = Worker(Table(crashed))
    replay.feed(records, [2, 3, 40])  # groups that cut the planned run 20..29 short twice, then hold all of it

    assert replay.emitter.summaries[0] == crash_summaries[0], "the planned run is replayed whole, to the same summary"
    assert replay.emitter.alerts[: len(crash_alerts)] == crash_alerts, "the same alerts, with the same ids"
    expected = _spend(first.emitter.summaries)
    assert expected > 0
    assert _spend(first.emitter.summaries[: summaries[1]] + replay.emitter.summaries) == expected


def test_between_checkpoints_a_replay_repeats_every_run_since_the_persisted_cursor_and_charges_once() -> None:
    """State written once an hour: only the first group's cursor is on the broker when the worker dies after
    its fourth group, so the replay covers four groups' runs, cut as they were first cut."""
    records = _records()
    first, crashed, summaries, alerts = _crash(records, FIRST_SIZES, crash_group=3, checkpoint_ms=3_600_000)
    cursor = SourceCursor.from_bytes(crashed[f"0|{CURSOR_KEY}".encode()]).next_offset
    assert cursor == FIRST_SIZES[0], "only the first group was written"
    sent = [summary for summary in first.emitter.summaries[: summaries[1]] if summary["o"] >= cursor]
    assert len(sent) == 3, "records 6..29 went out as three runs (groups of 9, 5 and 10)"
    crash_alerts = first.emitter.alerts[: alerts[1]]
    assert any(a["status"] == "firing" for a in crash_alerts)

    replay = Worker(Table(crashed))
    replay.feed(records, [4, 7, 40])

    assert replay.emitter.summaries[: len(sent)] == sent, "every run since the cursor, to the same summaries"
    assert replay.emitter.alerts[: len(crash_alerts)] == crash_alerts, "the same alerts, with the same ids"
    assert _spend(first.emitter.summaries[: summaries[1]] + replay.emitter.summaries) == \
        _spend(first.emitter.summaries) > 0


def test_a_held_budget_ledger_keeps_the_cursor_back_and_a_replay_charges_every_call_once() -> None:
    """The partition's budget ledger written at most once an hour (``ledger_checkpoint_ms``), the rest after every
    group: the cursor stays where the ledger was last written (after the first group), so the replay after the
    crash charges the four groups since, and the ledger ends as the first attempt's did."""
    records = _records()
    first, crashed, _summaries, _alerts = _crash(records, FIRST_SIZES, crash_group=3,
                                                 ledger_checkpoint_ms=3_600_000)
    cursor = SourceCursor.from_bytes(crashed[f"0|{CURSOR_KEY}".encode()]).next_offset
    assert cursor == FIRST_SIZES[0], "the ledger was last written with the first group"

    replay = Worker(Table(crashed))
    replay.feed(records, [4, 7, 40])

    charged = replay.store.engine(0).budget.snapshot()
    assert charged == first.store.engine(0).budget.snapshot()
    assert sum(row["spent_micros"] for row in charged if row["scope"] == "service" and row["period"] == "day") > 0


def test_without_the_plan_a_replay_in_other_groups_charges_records_twice() -> None:
    """The control: what persisting the runs' ends prevents."""
    records = _records()
    first, crashed, summaries, _alerts = _crash(records, FIRST_SIZES, crash_group=3)
    crashed.pop(f"0|{RUN_PLAN_KEY}".encode())
    replay = Worker(Table(crashed))
    replay.feed(records, [2, 3, 40])
    charged = _spend(first.emitter.summaries[: summaries[1]] + replay.emitter.summaries)
    assert charged > _spend(first.emitter.summaries)


def test_records_of_a_group_are_absorbed_as_one_run_and_feed_the_same_totals() -> None:
    records = _records()
    whole, one_by_one = Worker(Table()), Worker(Table())
    whole.feed(records, [RECORDS])
    one_by_one.feed(records, [1])
    assert [s["o"] for s in whole.emitter.summaries] == [RECORDS - 1]
    assert len(one_by_one.emitter.summaries) == RECORDS
    assert _spend(whole.emitter.summaries) == _spend(one_by_one.emitter.summaries) > 0


def test_records_of_a_partition_lost_while_they_were_read_are_left_to_the_cursor_and_absorbed_once() -> None:
    """The partition is not ours once the first group's records are decoded (a revoke, or a stall past the
    session: session_fence.py): nothing of them is absorbed or sent, the cursor goes back to the first, and
    owned again the partition is read from there, every call charged once."""
    records = _records()
    reference, worker = Worker(Table()), Worker(Table())
    reference.feed(records, [6])
    looks = []

    def owns(partition: int, lane: str = "") -> bool:
        looks.append(partition)
        return len(looks) != 7  # the first group's 6 records are admitted; the 7th look follows their decoding

    worker.ownership.owns = owns  # type: ignore[method-assign]
    worker.group(records, 0, 6)
    assert worker.emitter.summaries == [] and worker.store.engine(0).cursor.next_offset == 0
    assert worker.ownership.rewinds == [0]  # ours again at the group's end: read from the first record again
    worker.ownership.rewinds.clear()
    worker.feed(records, [6])
    assert _spend(worker.emitter.summaries) == _spend(reference.emitter.summaries) > 0
    assert [s["o"] for s in worker.emitter.summaries] == [s["o"] for s in reference.emitter.summaries]


def test_a_partition_revoked_while_its_records_were_read_gets_no_engine_built_again() -> None:
    """The revoke dropped the engine while the group's records were decoded: none is built again for them (one
    built from the table now would be found, stale, if the partition came back), and nothing is absorbed or sent."""
    records = _records()
    worker = Worker(Table())
    looks = []

    def owns(partition: int, lane: str = "") -> bool:
        looks.append(partition)
        if len(looks) == 7:  # the revoke came while the first group's 6 records were decoded
            worker.store.drop(partition)
        return len(looks) < 7  # and the partition stays another worker's

    worker.ownership.owns = owns  # type: ignore[method-assign]
    worker.group(records, 0, 6)
    assert worker.emitter.summaries == [] and 0 not in worker.store.engines()


def test_a_first_record_faust_fails_to_deliver_is_a_hole_the_cursor_finds() -> None:
    """A partition never absorbed anywhere starts at its log's first offset (set on assignment): when the first
    record delivered after a rebalance is not that one, the agent seeks back instead of counting from there."""
    records = _records()
    reference, worker = Worker(Table()), Worker(Table())
    reference.feed(records, [6])
    worker.store.set_starts({("", 0): 0})
    worker.group(records, 1, 6)  # record 0 never reached the agent
    assert worker.emitter.summaries == [] and worker.ownership.rewinds == [0]
    worker.ownership.rewinds.clear()
    worker.feed(records, [6])
    assert _spend(worker.emitter.summaries) == _spend(reference.emitter.summaries) > 0

    unseeded = Worker(Table())  # as before: the first record delivered was taken for the first there is
    unseeded.group(records, 1, 6)
    assert unseeded.ownership.rewinds == [] and len(unseeded.emitter.summaries) == 1


# ---- the plan alone -------------------------------------------------------------------------------------------
def test_fresh_records_make_one_run_split_by_records_that_stand_alone() -> None:
    plan = RunPlan()
    cut = plan.cut(list(range(10, 20)), [i == 3 for i in range(10)])
    assert cut.runs == [(0, 3), (3, 4), (4, 10)]
    assert cut.planned == [12, 13, 19]
    assert cut.held_from is None


def test_planned_runs_are_cut_as_planned_and_the_rest_afresh() -> None:
    plan = RunPlan([12, 19])
    cut = plan.cut(list(range(10, 26)), [False] * 16)
    assert cut.runs == [(0, 3), (3, 10), (10, 16)]
    assert cut.planned == [25]


def test_an_incomplete_planned_run_waits_then_goes_in_parts() -> None:
    plan = RunPlan([19])
    for _ in range(MAX_HOLDS):
        cut = plan.cut(list(range(10, 16)), [False] * 6)
        assert cut.runs == [] and cut.held_from == 0
    cut = plan.cut(list(range(10, 16)), [False] * 6)
    assert cut.runs == [(0, 6)] and cut.held_from is None and cut.planned == []
    assert plan.cut(list(range(16, 20)), [False] * 4).runs == [(0, 4)], "the rest still ends where planned"


def test_a_run_spans_a_few_seconds_of_event_time_at_most() -> None:
    """A backlog (or an accelerated replay) is judged every few seconds of event time, not once per 64 records."""
    times = [(k * 4_000, k * 4_000 + 3_000) for k in range(6)]  # records 4 s apart, each 3 s long
    times[2] = None  # a record without calls does not stretch a run
    cut = RunPlan().cut(list(range(6)), [False] * 6, times)
    assert cut.runs == [(0, 3), (3, 5), (5, 6)]
    assert all(times[end - 1] is None or (times[end - 1][1] - times[first][0]) <= MAX_RUN_SPAN_MS  # type: ignore[index]
               for first, end in cut.runs)


@pytest.mark.parametrize("ends", [[], [5], [3, 70, 900]])
def test_the_plan_round_trips_and_forgets_ends_the_cursor_passed(ends: list[int]) -> None:
    plan = RunPlan.from_bytes(RunPlan(ends).to_bytes())
    assert plan.ends == ends
    plan.extend([1000], first=6)
    assert plan.ends == [end for end in ends if end >= 6] + [1000]
