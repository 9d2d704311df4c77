"""Runs of records: consecutive records of one source partition that the engine absorbs as one batch.

faust pays for every record and the engine pays a fixed cost per batch (~15 monitors, each a few numpy calls),
so a service sending small records (a quiet service, or many series) costs far more per call than one sending
large ones. The calls agent therefore joins the records of a partition in one group into runs and hands each
run to the engine as one batch, stamped with the offset of its last record.

Exactly-once needs a replay to cut the same runs: state objects are stamped with a run's last offset, fleet
summaries carry it, and an alert's id holds the event time its run decided at. So the runs' ends are planned
and persisted before any output of theirs is sent (``RunPlan``); a replay follows the plan, holding back a
planned run until all its records are in one group. Beyond the plan, runs are cut afresh.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_RUN_RECORDS = 64  # at most one take group (processors/agents/calls.py)
# A run spans at most this much event time: rules are judged once per run, at its newest call, so a backlog
# caught up after an outage (or an accelerated simulation) is still judged every few seconds of event time,
# as a live stream is, and never once per minutes of it. One slot of the latency and traffic windows.
MAX_RUN_SPAN_MS = 10_000
# A planned run still incomplete after this many groups is absorbed in parts: a replay must not stall for good
# (an alert decided in such a part may then carry an id other than the one the first attempt sent).
MAX_HOLDS = 3


@dataclass(frozen=True, slots=True)
class Cut:
    """Runs as (first, last + 1) positions into the group's records of one partition, in order."""

    runs: list[tuple[int, int]]
    held_from: int | None  # records from this position on wait for a later group (an incomplete planned run)
    planned: list[int]  # the ends of new runs, to persist before any of their output is sent


@dataclass(slots=True)
class RunPlan:
    """The last offsets of the runs a partition's engine decided on and has not yet covered by its cursor."""

    ends: list[int] = field(default_factory=list)
    holds: int = 0  # consecutive groups that held back the same planned run (in memory only)

    def cut(self, offsets: Sequence[int], alone: Sequence[bool],
            times: Sequence[tuple[int, int] | None] | None = None) -> Cut:
        """Cut a partition's admitted records (offsets rising) into runs. ``alone``: records that make a run of
        their own (feedback, empty records); ``times``: each record's oldest and newest call (None: no calls), a run
        spanning at most MAX_RUN_SPAN_MS. Planned runs are cut as planned; the rest afresh and planned."""
        ends = [end for end in self.ends if end >= offsets[0]] if offsets else []
        runs: list[tuple[int, int]] = []
        planned: list[int] = []
        i, n = 0, len(offsets)
        while i < n:
            if ends and offsets[i] <= ends[0]:
                j = i
                while j < n and offsets[j] <= ends[0]:
                    j += 1
                if offsets[j - 1] < ends[0] and j == n and self.holds < MAX_HOLDS:
                    self.holds += 1
                    return Cut(runs, i, planned)
                runs.append((i, j))
                if offsets[j - 1] >= ends[0] or j < n:  # whole (or its last record never comes: a marker)
                    ends.pop(0)
                i = j
                continue
            j = i + 1
            if not alone[i]:
                span = times[i] if times is not None else None
                while j < n and not alone[j] and j - i < MAX_RUN_RECORDS:
                    if times is not None and times[j] is not None:
                        joined = times[j] if span is None else (min(span[0], times[j][0]), max(span[1], times[j][1]))
                        if joined[1] - joined[0] > MAX_RUN_SPAN_MS:
                            break
                        span = joined
                    j += 1
            runs.append((i, j))
            planned.append(offsets[j - 1])
            i = j
        self.holds = 0
        return Cut(runs, None, planned)

    def extend(self, planned: Sequence[int], first: int) -> None:
        """Add new runs' ends, dropping those before ``first``, the first record not yet absorbed."""
        self.ends = [end for end in (*self.ends, *planned) if end >= first]

    def to_bytes(self) -> bytes:
        return json.dumps(self.ends).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> RunPlan:
        return cls([int(end) for end in json.loads(blob)])
