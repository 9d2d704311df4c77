"""Small helpers every benchmark group shares: repeated runs in alternating order, percentiles, timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Scale:
    """How big a run is; ``quick`` keeps the whole suite within a few minutes."""

    name: str
    calls: int  # calls pre-loaded for the throughput runs
    faust_records: int  # single-call records for the faust no-op baseline
    sdk_calls: int
    detector_calls: int
    stability_s: float | None  # None: the stability run is skipped
    rounds: int = ROUNDS


QUICK = Scale("quick", calls=100_000, faust_records=30_000, sdk_calls=5_000, detector_calls=20_000, stability_s=None)
FULL = Scale("full", calls=1_000_000, faust_records=50_000, sdk_calls=50_000, detector_calls=200_000,
             stability_s=600.0)


@dataclass(slots=True)
class GroupResult:
    """Figures of one benchmark group plus a line of method notes per figure (keys may repeat notes)."""

    figures: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, value: float | None, note: str = "") -> None:
        self.figures[key] = None if value is None else float(value)
        if note:
            self.notes[key] = note

    def merge(self, other: GroupResult) -> None:
        self.figures.update(other.figures)
        self.notes.update(other.notes)


def alternating(variants: Mapping[str, Callable[[], float]], rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Run every variant ``rounds`` times, the order reversed on odd rounds so drift hits all alike."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(variants[name]())
    return samples


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: float(statistics.median(values)) for name, values in samples.items() if values}


def percentile(values: Sequence[float], q: float) -> float:
    """The lower order statistic of rank floor(q * (n - 1)), as np.quantile(method="lower")."""
    ordered = sorted(values)
    return float(ordered[int(q * (len(ordered) - 1))])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rate_between(first: tuple[float, int], last: tuple[float, int]) -> float:
    """Calls per second between two (time, cumulative calls) observations."""
    elapsed = last[0] - first[0]
    return (last[1] - first[1]) / elapsed if elapsed > 0 else float("nan")


def summarized_rate(progress: Sequence[tuple[int, int]], calls_per_record: float) -> float:
    """Calls/s from fleet summaries as (send stamp ms, records covered): a summary is sent once its run of records
    is done, so the first stamp marks the end of the first run; the span covers the later runs' records only."""
    if len(progress) < 2:
        return float("nan")
    ordered = sorted(progress)
    later = sum(records for _, records in ordered[1:])
    return rate_between((ordered[0][0] / 1000.0, 0), (ordered[-1][0] / 1000.0, later * calls_per_record))


def now_ms() -> int:
    return int(time.time() * 1000)


def describe(samples: Mapping[str, Sequence[float]], unit: str = "calls/s") -> str:
    """``name: a / b / c`` per variant, for the notes: lets a reader see the spread behind each median."""
    parts = [f"{name} {' / '.join(f'{v:,.0f}' for v in values)}" for name, values in samples.items()]
    return f"runs ({unit}): " + "; ".join(parts)


def alternated_runs(samples: Mapping[str, Sequence[float]], unit: str = "calls/s") -> str:
    """The end of a note on medians from ``alternating``: how many runs each is of, and every run."""
    rounds = max(len(values) for values in samples.values())
    return f"runs alternated, median of {rounds}; " + describe(samples, unit)


def round_floats(payload: Any, digits: int = 6) -> Any:
    if isinstance(payload, float):
        return round(payload, digits)
    if isinstance(payload, dict):
        return {k: round_floats(v, digits) for k, v in payload.items()}
    if isinstance(payload, list):
        return [round_floats(v, digits) for v in payload]
    return payload
