"""The worker's pure path in one process: decode + ``PartitionEngine.process`` + metrics export per run of records.

The worker has no switches for sketches or metrics, so their cost is measured here instead: the engine
built as processors/app.py builds it, once with the latency monitor's update replaced by a no-op (sketches
off) and once without ``MetricsExporter`` calls (metrics off), against the full path, interleaved.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from bench import dataset
from bench.common import GroupResult, Scale, describe, medians, now_ms
from bench.throughput import build_decoder
from llmpulse.processors import configure, loaders
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.settings import ProcessorSettings


class Pipeline:
    """One worker's per-record work without Kafka or faust; ``sketches``/``metrics`` switch those parts."""

    def __init__(self, sketches: bool = True, metrics: bool = True, ledger_every_s: float | None = None) -> None:
        """``ledger_every_s``: how often the ledgers are written (default ``ledger_checkpoint_s``)."""
        settings = ProcessorSettings()
        config = configure.engine_config(settings)
        self.decoder = build_decoder(settings)
        pricer = Pricer(loaders.read_price_overrides(settings.prices_file))
        self.engine = PartitionEngine(0, config, pricer, GuardMonitor(config.guarding, loaders.read_injection_model()))
        if not sketches:
            self.engine.latency.update = _noop  # type: ignore[method-assign]
        registry = CollectorRegistry()
        self.exporter = MetricsExporter(WorkerMetrics(registry, settings.max_series_per_metric)) if metrics else None
        self._ledger_every_s = settings.ledger_checkpoint_s if ledger_every_s is None else ledger_every_s
        self._ledger_written = -math.inf
        self.written: Counter[str] = Counter()  # state bytes drained, by namespace

    def feed(self, values: Sequence[bytes], first_offset: int = 0) -> int:
        """Process the records as the calls agent processes a group of them: decoded (their calls checked at once),
        absorbed as one run (core/run_plan.py), state drained once; returns the calls accepted."""
        now = now_ms()
        parts = [calls for calls, _refused in self.decoder.decode_all(values, now) if calls is not None]
        if not parts:
            return 0
        calls = CallColumns.concat(parts)
        last = first_offset + len(values) - 1
        self.engine.cursor.advance(last)
        outcome = self.engine.process(calls, last, now)
        if self.exporter is not None:
            self.exporter.record_batch(outcome.totals, outcome.accepted, records=len(values))
            self.exporter.record_guard(outcome.guard, calls)
            self.exporter.record_unpriced(outcome.unpriced_models)
        # the agent persists the changed state once per group of records, the ledgers at most every
        # ledger_checkpoint_s (EngineStore.checkpoint)
        hold = time.monotonic() - self._ledger_written < self._ledger_every_s
        for key, blob in self.engine.drain_state(hold_ledgers=hold):
            self.written[key.partition("/")[0]] += len(blob or b"")
        if not hold:
            self._ledger_written = time.monotonic()
        return outcome.accepted


def _noop(*_args: object, **_kwargs: object) -> None:
    return None


def interleaved_rates(values: Sequence[bytes], variants: dict[str, dict[str, bool]],
                      chunk: int = 16) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Calls/s of each variant, fed the same records side by side in small chunks, the order rotating; and the
    CPU seconds each variant's thread spent on each chunk (paired: the same records; CPU time, so a neighbour
    taking the core mid-chunk does not count).

    Every pipeline keeps its own state and sees every record, and drains its state once per chunk as the
    agent persists once per group of records; interleaving at this grain (~0.1 s) means a burst of load
    from a neighbour on the machine slows all variants alike instead of whichever ran then.
    """
    pipelines = {name: Pipeline(**switches) for name, switches in variants.items()}
    spent: dict[str, list[float]] = {name: [] for name in pipelines}
    used: dict[str, list[float]] = {name: [] for name in pipelines}
    accepted = dict.fromkeys(pipelines, 0)
    names = list(pipelines)
    for turn, start in enumerate(range(0, len(values), chunk)):
        part = values[start : start + chunk]
        for name in names[turn % len(names):] + names[: turn % len(names)]:
            gc.collect()  # a collection the previous variant's garbage triggers is not charged to this one
            began, cpu = time.perf_counter(), time.thread_time()
            accepted[name] += pipelines[name].feed(part, first_offset=start)
            spent[name].append(time.perf_counter() - began)
            used[name].append(time.thread_time() - cpu)
    return {name: accepted[name] / sum(spent[name]) for name in names}, used


def paired_ratio(spent: dict[str, list[float]], without: str, full: str = "full") -> float:
    """Throughput of ``full`` over ``without`` as the median of per-chunk CPU-time ratios: each chunk is the same
    records for both, so what a neighbour on the machine disturbs spoils a few pairs instead of a whole round."""
    return float(statistics.median(off / on for off, on in zip(spent[without], spent[full], strict=True) if on > 0))


VARIANTS = {"full": {}, "sketches_off": {"sketches": False}, "metrics_off": {"metrics": False}}


def run(scale: Scale) -> GroupResult:
    result = GroupResult()
    records = dataset.batch_records(dataset.realistic_rows(scale.calls))
    values = [value for _, value, _ in records]
    rounds = [interleaved_rates(values, VARIANTS) for _ in range(scale.rounds)]
    samples = {name: [rates[name] for rates, _ in rounds] for name in VARIANTS}
    mid = medians(samples)
    spent = {name: [seconds for _, chunks in rounds for seconds in chunks[name]] for name in VARIANTS}
    sketch, metrics = paired_ratio(spent, "sketches_off"), paired_ratio(spent, "metrics_off")
    pairs = len(spent["full"])
    method = ("in-process decode + PartitionEngine.process + MetricsExporter; variants fed the same records "
              "interleaved 16 records at a time. The worker has no switches for sketches or metrics, so their "
              "cost is measured on this pure path")
    result.put("inprocess_eps", mid["full"], f"{method}; " + describe(samples))
    result.put("sketch_overhead_ratio", sketch,
               "throughput with sketches on / with LatencyMonitor.update a no-op (0.90 = sketches cost 10%), "
               f"median of the CPU-time ratios of {pairs} paired chunks of 16 records")
    result.put("metrics_overhead_ratio", metrics,
               "throughput with / without MetricsExporter.record_batch+record_guard+record_unpriced, median of the "
               f"CPU-time ratios of {pairs} paired chunks of 16 records")
    return result
