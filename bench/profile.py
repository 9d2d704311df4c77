"""Where the worker's pure path spends its time: pyinstrument over decode + engine + metrics export.

Run by ``bench.run`` when a goal fails; writes bench/results/profile.txt (flat self-time list, then the call
tree). pyinstrument is a benchmark-only tool: ``pip install pyinstrument``.
"""

from __future__ import annotations

from pathlib import Path

from bench import dataset
from bench.inprocess import Pipeline
from llmpulse.processors.agents.calls import record_groups

PROFILE_CALLS = 50_000


def hot_spots(path: Path, calls: int = PROFILE_CALLS) -> list[str]:
    """Profile the in-process path, write the report to ``path``; returns the flat list's top lines."""
    try:
        from pyinstrument import Profiler
        from pyinstrument.renderers import ConsoleRenderer
    except ImportError:
        path.write_text("pyinstrument is not installed: pip install pyinstrument\n")
        return []
    values = [value for _, value, _ in dataset.batch_records(dataset.realistic_rows(calls))]
    pipeline = Pipeline()
    pipeline.feed(values[: len(values) // 10])  # warm caches, price lookups and first-seen series
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for group in record_groups([len(value) for value in values]):  # groups of records, as the calls agent makes them
        pipeline.feed(values[group.start : group.stop], first_offset=len(values) + group.start)
    session = profiler.stop()
    flat = ConsoleRenderer(flat=True, flat_time="self", time="percent_of_total", show_all=False).render(session)
    tree = ConsoleRenderer(time="percent_of_total").render(session)
    header = (f"decode + PartitionEngine.process + MetricsExporter over {calls:,} calls "
              f"({len(values)} records of <=500)\n\n== flat, self time ==\n")
    path.write_text(header + flat + "\n== call tree ==\n" + tree)
    return [line for line in flat.splitlines() if "%" in line][:10]
