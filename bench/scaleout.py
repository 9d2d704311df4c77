"""Calls/s of two workers of one app (one consumer group) against one worker, on the same calls.

Two groups run side by side, each on its own calls topic of ``PARTITIONS`` partitions: one worker, and two workers
sharing an app id (so one consumer group). Each is warmed with slices of calls until it has settled: its workers
together hold engines for every partition, each worker for some, none twice, the same way after two slices running
(the rebalance is over and every worker is processing). Then the same timed calls are produced to one group's
topic at a time, alternating between the groups (1, 2, 2, 1, ...), so a neighbour's load hits both alike; a rate
runs from the first timed record processed to the last, timed by the fleet summaries' send stamps (as
``worker_eps``), and each worker's /metrics counter gives its share. A batch during which the partitions moved
fails the run. The calls are spread over ``SERIES`` series (a hundred services, the SDK's record keys) so the
keys hash evenly to the partitions.

``scaleout_ratio_2_workers`` = the two workers' rate / the one worker's, median of each.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType

from bench import dataset, workerproc
from bench.cardinality import spread
from bench.common import FULL, GroupResult, Scale, alternated_runs, alternating, medians, ratio, summarized_rate
from bench.traffic import SummaryProgress, TopicWatcher

CPU_FIGURES = ("scaleout_cpu_us_per_call_1_worker", "scaleout_cpu_us_per_call_2_workers",
               "scaleout_cpu_efficiency_2_workers", "scaleout_worker_cores_1_worker", "scaleout_worker_cores_2_workers")
# The machine's own reference for scaleout_cpu_efficiency_2_workers: CPU time of a fixed piece of plain Python work
# in one process alone against in each of two at once (shared caches and a busy host tax both).
SPIN = ("import time\nt = time.process_time()\nx = 0\nfor i in range(15_000_000): x += i * i\n"
        "print(time.process_time() - t)")
FIGURES = ("scaleout_eps_1_worker", "scaleout_eps_2_workers", "scaleout_ratio_2_workers", *CPU_FIGURES,
           "scaleout_machine_efficiency_2_processes")
PARTITIONS = 4
SERIES = 400  # 100 services x 4 (model, provider) pairs, and as many users
QUICK_CALLS, FULL_CALLS = 200_000, 1_000_000
WARMUP_CALLS = 20_000  # one warm-up slice: a record for every service
SETTLE_TIMEOUT_S = 180.0
SLICE_TIMEOUT_S = 60.0
BATCH_TIMEOUT_S = 600.0
QUIET_S = 1.0  # no summary for this long: the group has finished what it was given

Records = list[tuple[bytes, bytes, int]]


def settled(held: Sequence[Collection[int]], partitions: int) -> bool:
    """Whether each worker holds some partitions, none is held twice, and together they hold all of them."""
    owned = [p for partitions_of in held for p in partitions_of]
    return all(held) and len(owned) == len(set(owned)) and set(owned) == set(range(partitions))


def _wait(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)
    return done()


class WorkerGroup:
    """``size`` workers of one app on a fresh calls topic; ``settle`` once, then ``timed`` batch after batch."""

    def __init__(self, bootstrap: str, tag: str, workdir: Path, size: int) -> None:
        self.bootstrap, self.size = bootstrap, size
        app_id = f"{tag}-so{size}-{uuid.uuid4().hex[:6]}"
        self.topic, fleet = f"{tag}-{app_id}-calls", workerproc.fleet_topic(tag, app_id)
        dataset.create_topics(bootstrap, [self.topic], partitions=PARTITIONS)
        dataset.create_topics(bootstrap, [fleet], partitions=1)
        self.progress = SummaryProgress()
        self.watcher = TopicWatcher(bootstrap, fleet, self.progress.handle)
        self.watcher.start()
        env = {"LLMPULSE_TOPIC_PARTITIONS": str(PARTITIONS)}
        self.workers = [workerproc.launch(bootstrap, workdir / app_id / str(k), app_id, self.topic, tag, env)
                        for k in range(size)]
        self.held: list[set[int]] = []
        self.shares: list[list[float]] = []  # per timed batch, each worker's share of its calls
        self.cpu: list[BatchCpu] = []  # per timed batch, where the machine's CPU went

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for worker in self.workers:
            worker.stop()
        self.watcher.stop()

    def _holding(self) -> list[set[int]]:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        return [workerproc.calls_partitions(worker) or set() for worker in self.workers]

    def _feed(self, records: Records, timeout: float) -> tuple[int, bool]:
        """Produce ``records``; (index of their first summary, whether every summary came within ``timeout``)."""
        start = len(self.progress.runs)
        dataset.preload(self.bootstrap, self.topic, records)
        done = _wait(lambda: self.progress.records(start) >= len(records), timeout)
        count = -1
        while count != len(self.progress.runs):  # quiet: nothing of this batch still on its way
            count = len(self.progress.runs)
            time.sleep(QUIET_S)
        return start, done

    def settle(self, warmup: Records) -> None:
        """Warm-up slices until the workers hold the partitions the same settled way twice running."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        previous: list[set[int]] | None = None
        while time.monotonic() < deadline:
            self._feed(warmup, SLICE_TIMEOUT_S)
            held = self._holding()
            if settled(held, PARTITIONS) and held == previous:
                self.held = held
                return
            previous = held
        raise RuntimeError(f"{self.size} workers did not settle on {PARTITIONS} partitions in "
                           f"{SETTLE_TIMEOUT_S:.0f} s (last held: {previous})")

    def timed(self, records: Records) -> float:
        """Calls/s over ``records``, produced at once; fails when a worker died or the partitions moved meanwhile."""
        calls = sum(n for _, _, n in records)
        before = [workerproc.processed(worker) or 0.0 for worker in self.workers]
        cpu_before = self._cpu_reading()
        start, done = self._feed(records, BATCH_TIMEOUT_S)
        cpu_after = self._cpu_reading()
        after = [workerproc.processed(worker) or 0.0 for worker in self.workers]
        held = self._holding()
        if not done or held != self.held:
            raise RuntimeError(f"{self.size} workers: {self.progress.records(start)} of {len(records)} timed records "
                               f"done, partitions held {self.held} before and {held} after")
        self.shares.append([(b - a) / calls for a, b in zip(before, after, strict=True)])
        rate = summarized_rate(self.progress.runs[start:], calls / len(records))
        if cpu_before is not None and cpu_after is not None:
            workers, busy, preempted = (after_ - before_ for before_, after_ in zip(cpu_before, cpu_after, strict=True))
            self.cpu.append(BatchCpu(calls, rate, workers, busy - workers, int(preempted)))
        return rate

    def _cpu_reading(self) -> tuple[float, float, int] | None:
        """(CPU seconds of the group's workers, busy seconds of the machine, the workers' preemptions) so far, from
        /proc; None where it cannot be read."""
        spent = [workerproc.cpu_seconds(worker) for worker in self.workers]
        preempted = [workerproc.preemptions(worker) for worker in self.workers]
        busy = workerproc.machine_busy_seconds()
        if busy is None or None in spent or None in preempted:
            return None
        return sum(spent), busy, sum(preempted)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class BatchCpu:
    """Where the machine's CPU went while one group took a timed batch (produced, processed, then quiet)."""

    calls: int
    rate: float  # calls/s, first to last record processed
    workers_s: float  # CPU seconds of the group's workers
    others_s: float  # CPU seconds of everything else: the broker, the benchmark, the idle group
    preempted: int  # times a worker's main thread was taken off a core while it could have run on (all workers)

    @property
    def worker_cores(self) -> float:
        """Cores the workers kept busy while processing (their CPU over the batch's processing time; the batch's
        quiet end adds the little an idle worker spends)."""
        return self.workers_s * self.rate / self.calls

    @property
    def us_per_call(self) -> float:
        return self.workers_s / self.calls * 1e6

    @property
    def preempted_per_s(self) -> float:
        """Preemptions of the group's workers' main threads together, per second of processing."""
        return self.preempted * self.rate / self.calls


def spin_cpu_seconds(together: int) -> list[float]:
    """CPU seconds of ``SPIN`` in each of ``together`` processes started at once."""
    spinning = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
                for _ in range(together)]
    return [float(process.communicate()[0]) for process in spinning]


def machine_efficiency(rounds: int) -> tuple[float, str]:
    """CPU per unit of work of one process alone over that of each of two at once, median of alternated rounds."""
    samples = alternating({"alone": lambda: spin_cpu_seconds(1)[0] * 1000,
                           "two": lambda: statistics.mean(spin_cpu_seconds(2)) * 1000}, rounds)
    mid = medians(samples)
    return mid["alone"] / mid["two"], alternated_runs(samples, "CPU ms a process")


def cpu_figures(result: GroupResult, batches: dict[str, list[BatchCpu]], cores: int) -> None:
    """CPU per call and cores used, per group (medians over its batches), and what they say of the rate ratio: the
    efficiency is the CPU per call of one worker over that of two (1.0: splitting the partitions costs nothing),
    so the ratio is about that times the cores the two got over the cores the one got."""
    if not all(batches.values()):
        for key in CPU_FIGURES:
            result.put(key, None, "not measured: no /proc to read CPU time from")
        return
    us = {name: statistics.median(b.us_per_call for b in group) for name, group in batches.items()}
    used = {name: statistics.median(b.worker_cores for b in group) for name, group in batches.items()}
    others = {name: statistics.median(b.others_s / b.calls * 1e6 for b in group) for name, group in batches.items()}
    preempted = {name: statistics.median(b.preempted_per_s for b in group) for name, group in batches.items()}
    how = ("CPU time of the workers' processes (/proc) over each timed batch, from producing it to the quiet after "
           "it; median over the batches")
    result.put("scaleout_cpu_us_per_call_1_worker", us["1"], how)
    result.put("scaleout_cpu_us_per_call_2_workers", us["2"], how)
    result.put("scaleout_cpu_efficiency_2_workers", ratio(us["1"], us["2"]),
               "scaleout_cpu_us_per_call_1_worker / scaleout_cpu_us_per_call_2_workers (1.0: two workers spend "
               f"per call what one does); the workers were taken off a core while they could have run on (a "
               f"neighbour's turn) {preempted['1']:,.0f} times a second of processing alone and {preempted['2']:,.0f} "
               "as two (every such switch refills the caches)")
    cores_note = (f"the workers' CPU seconds per second of processing (calls / rate); the machine has {cores} cores; "
                  f"everything else (the broker, the benchmark, the idle group) spent {others['1']:.1f} us a call "
                  f"beside one worker and {others['2']:.1f} beside two")
    result.put("scaleout_worker_cores_1_worker", used["1"], cores_note)
    result.put("scaleout_worker_cores_2_workers", used["2"], cores_note)


def run(scale: Scale, bootstrap: str, tag: str) -> GroupResult:
    result = GroupResult()
    calls = FULL_CALLS if scale.name == FULL.name else QUICK_CALLS
    spread_rows = spread(dataset.realistic_rows(calls + WARMUP_CALLS), SERIES, SERIES)
    warmup = dataset.batch_records(spread_rows[:WARMUP_CALLS])
    timed = dataset.batch_records(spread_rows[WARMUP_CALLS:])
    with (tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp,
          WorkerGroup(bootstrap, tag, Path(tmp), 1) as one, WorkerGroup(bootstrap, tag, Path(tmp), 2) as two):
        one.settle(warmup)
        two.settle(warmup)
        samples = alternating({"1": partial(one.timed, timed), "2": partial(two.timed, timed)}, scale.rounds)
    mid = medians(samples)
    splits = " / ".join(":".join(f"{share:.2f}" for share in batch) for batch in two.shares)
    groups = (f"one group of 1 worker and one of 2 (one app id), each settled first (two workers held {two.held}), "
              "the same timed calls produced to each in turn")
    method = (f"{calls:,} realistic calls over ~{SERIES} series/{SERIES} users in {len(timed)} records keyed by "
              f"service, on {PARTITIONS}-partition topics; {groups}; first to last timed record processed, by the "
              f"fleet summaries' send stamps; {alternated_runs(samples)}")
    result.put("scaleout_eps_1_worker", mid["1"], method)
    result.put("scaleout_eps_2_workers", mid["2"], f"{method}; each worker's share of the timed calls: {splits}")
    result.put("scaleout_ratio_2_workers", ratio(mid["2"], mid["1"]),
               f"scaleout_eps_2_workers / scaleout_eps_1_worker (same run, same data); the machine has "
               f"{os.cpu_count()} cores, shared with the broker, the benchmark process and the idle group, and one "
               "of the two workers also runs the fleet stage (every record's summary)")
    cpu_figures(result, {"1": one.cpu, "2": two.cpu}, os.cpu_count() or 1)
    efficiency, runs = machine_efficiency(scale.rounds)
    result.put("scaleout_machine_efficiency_2_processes", efficiency,
               "a fixed piece of plain Python work: CPU time in one process alone / in each of two at once (1.0: two "
               f"busy processes do not slow each other; the reference for scaleout_cpu_efficiency_2_workers); {runs}")
    return result
