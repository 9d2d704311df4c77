"""Latency and time-to-first-token percentiles per (service, model, provider) over sliding windows.

Values are kept in seconds in 1%-relative-error sketches, one per series per time slot (see slots.py).
Alert rules (seed 000): p95 over the alert window above ``p95_warning_s`` is WARNING, p99 above
``p99_critical_s`` is CRITICAL; nothing is judged on fewer than ``min_samples`` calls. A percentile breaches
only when more calls are over its threshold than a series whose true percentile sits exactly at the threshold
would show by chance (binomial tail below ``breach_alpha``), and never on fewer than ``min_breaching_calls``: on
60 calls the p99 is the slowest single call, and a timeout or two must not page as a latency incident.

Rules run on columns: ``observe_series`` evaluates both rules for many series at once (the window sketches of
every series merged and read in one sorted pass, see ``window_quantiles``) and builds an ``Observation`` only
where a rule is breached or an incident is open on it; ``observe`` is the same for one series, every rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.grouping import first_of_runs
from llmpulse.processors.core.series_index import SeriesIndex
from llmpulse.processors.core.significance import breaching_calls_needed
from llmpulse.processors.core.sketch import LatencySketch, add_groups
from llmpulse.processors.core.sketch_union import SketchUnion
from llmpulse.processors.core.slots import SlotSeries, series_parts
from llmpulse.processors.core.window_cache import WindowCache

OpenRules = Mapping[tuple[tuple[str, str], ...], frozenset[str]]  # AlertPolicy.open_rules()
_NO_OPEN: OpenRules = {}
_SLOT_BITS = 40  # composite (series, slot) keys of one batch: slots of a batch span less than 2^40

QUANTILES = (0.5, 0.95, 0.99)
SERIES_LABELS = ("service", "model", "provider")


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyConfig:
    p95_warning_s: float = 2.0  # latency_p95 is WARNING above it (seed 000)
    p99_critical_s: float = 5.0  # latency_p99 is CRITICAL above it (seed 000)
    alert_window_s: int = 60  # the window the two rules read; one of windows_s
    windows_s: tuple[int, ...] = (60, 300, 3600)  # the longest is also the traffic rates' horizon
    interval_s: int = 10  # one slot of the latency sketches and the traffic counters
    min_samples: int = 20  # calls in the alert window before a percentile is judged
    # A percentile breaches only when this many calls are over its threshold ...
    min_breaching_calls: int = 3
    breach_alpha: float = 0.001  # ... and more than chance allows (binomial tail) if it sat there
    relative_accuracy: float = 0.01  # of every percentile the sketches return (0.01: 1%)
    # Slots more than exact_s behind their series' newest call fold into slots of fold_s (slots.py; 0: never), so
    # a sparse series persists ~3x fewer bytes. exact_s is raised to cover every window but the longest (the hour,
    # whose far edge may then reach up to fold_s further back); a window stays exact when read up to exact_s minus
    # its length behind its series' newest call (e.g. for a record that late: 180 s for the 5 m traffic window).
    exact_s: int = 480
    fold_s: int = 300


def window_label(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


class LatencyMonitor:
    """Sketch windows for one partition's series; decisions as alert observations."""

    RULES = ("latency_p95", "latency_p99")

    def __init__(self, config: LatencyConfig, index: SeriesIndex | None = None) -> None:
        self.config = config
        self.index = index or SeriesIndex(SERIES_LABELS)
        horizon = max(config.windows_s)

        def create() -> LatencySketch:
            return LatencySketch(config.relative_accuracy)

        exact_s = max([config.exact_s, config.alert_window_s, *(w for w in config.windows_s if w < horizon)])
        self.latency = SlotSeries("latency", config.interval_s, horizon, create, LatencySketch.from_bytes,
                                  LatencySketch.merge, exact_s, config.fold_s)
        self.ttft = SlotSeries("ttft", config.interval_s, horizon, create, LatencySketch.from_bytes,
                               LatencySketch.merge, exact_s, config.fold_s)
        self._windows: dict[tuple[int, bool, bool], WindowCache] = {}  # (window_s, ttft, guards) -> kept figures

    def update(
        self,
        series: list[str],
        inverse: np.ndarray,
        timestamps_ms: np.ndarray,
        latency_ms: np.ndarray,
        ttft_ms: np.ndarray,
        offset: int,
        now_ms: int,
    ) -> None:
        """Add one batch; ``series[inverse[i]]`` is call i's series key. One stable sort by (series, slot), then
        each group is a contiguous slice (no mask per group) whose count, sum, extremes and bucket keys come from
        whole-batch arrays (``_absorb``)."""
        slots = self.latency.slots_of(timestamps_ms)
        base = int(slots.min())
        combined = inverse.astype(np.int64) * (1 << _SLOT_BITS) + (slots - base)
        order = np.argsort(combined, kind="stable")
        combined = combined[order]
        first = first_of_runs(combined)
        codes = combined[first]
        keys = [series[code] for code in (codes >> _SLOT_BITS).tolist()]
        group_slots = (base + (codes & ((1 << _SLOT_BITS) - 1))).tolist()
        group = np.cumsum(first) - 1  # each call's (series, slot) group, in sorted order
        self._absorb(self.latency, keys, group_slots, group, latency_ms[order] / 1000.0, offset, now_ms)
        ttft = ttft_ms[order] / 1000.0
        streamed = ~np.isnan(ttft)  # TTFT of streamed calls only: groups without one get no TTFT slot
        if streamed.all():
            self._absorb(self.ttft, keys, group_slots, group, ttft, offset, now_ms)
        elif streamed.any():
            self._absorb(self.ttft, keys, group_slots, group[streamed], ttft[streamed], offset, now_ms)

    @staticmethod
    def _absorb(slots: SlotSeries[LatencySketch], keys: list[str], group_slots: list[int], group: np.ndarray,
                seconds: np.ndarray, offset: int, now_ms: int) -> None:
        """Each group's values (``group`` sorted, naming an entry of ``keys`` and ``group_slots``) into its slot
        sketch, the figures of every group computed at once (``add_groups``)."""
        starts = np.flatnonzero(first_of_runs(group))
        sketches = [slots.for_update(keys[code], group_slots[code], offset, now_ms) for code in group[starts].tolist()]
        add_groups(sketches, seconds, starts)

    def window(self, series: str, window_s: int, now_ms: int, ttft: bool = False) -> LatencySketch:
        parts = (self.ttft if ttft else self.latency).window(series, window_s, now_ms)
        return LatencySketch.merge_all(parts) if parts else LatencySketch(self.config.relative_accuracy)

    def quantiles(self, series: str, window_s: int, now_ms: int, ttft: bool = False) -> tuple[int, np.ndarray]:
        """(count, ``QUANTILES``) of latency, or with ``ttft`` of time to first token (streamed calls only)."""
        sketch = self.window(series, window_s, now_ms, ttft)
        return sketch.count, sketch.quantiles(QUANTILES)

    def observe(self, series: str, now_ms: int) -> list[Observation]:
        """p95 and p99 rule evaluations for one series over the alert window (clear ones included)."""
        return self.observe_series([series], now_ms, emit_all=True).get(0, [])

    def observe_series(self, series: Sequence[str], now_ms: int, open_rules: OpenRules = _NO_OPEN,
                       emit_all: bool = False) -> dict[int, list[Observation]]:
        """Both rules for every series at once; position in ``series`` -> its observations, only where a rule is
        breached or ``open_rules`` holds an incident on it (every rule with ``emit_all``)."""
        if not series:
            return {}
        config = self.config
        codes = self.index.codes(series)
        count, figures = self.window_quantiles(series, config.alert_window_s, now_ms, codes=codes)
        # the k-th slowest call must be over a threshold too, k from the binomial noise of that percentile
        p95, p99, guard95, guard99 = figures[:, 1], figures[:, 2], figures[:, 3], figures[:, 4]
        enough = count >= config.min_samples
        # Python's min(value, guard) keeps value when guard is NaN (comparisons with NaN are false)
        breach95 = enough & (np.where(guard95 < p95, guard95, p95) > config.p95_warning_s)
        breach99 = enough & (np.where(guard99 < p99, guard99, p99) > config.p99_critical_s)
        wanted = np.flatnonzero(breach95 | breach99) if not (emit_all or open_rules) else np.arange(len(series))
        window = window_label(config.alert_window_s)
        rules = (("latency_p95", "WARNING", p95, breach95, config.p95_warning_s),
                 ("latency_p99", "CRITICAL", p99, breach99, config.p99_critical_s))
        out: dict[int, list[Observation]] = {}
        for i in wanted.tolist():
            code = int(codes[i])
            held = open_rules.get(self.index.sorted_labels(code), frozenset())
            observations = []
            for rule, severity, values, breached, threshold in rules:
                if not (breached[i] or emit_all or rule in held):
                    continue
                value = values[i]
                where = "/".join(series_parts(series[i]))
                observations.append(Observation(
                    rule, self.index.labels(code), severity if breached[i] else None,
                    float(value) if enough[i] else 0.0, threshold, window,
                    f"{rule[-3:]} latency {value:.2f}s over {window} for {where} (threshold {threshold:g}s)",
                    now_ms, self.index.fingerprint(code, rule)))
            if observations:
                out[i] = observations
        return out

    def window_quantiles(self, series: Sequence[str], window_s: int, now_ms: int, *, ttft: bool = False,
                         guards: bool = True, codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(count per series, per series p50, p95, p99 and the two guard quantiles) over the window, NaN where a
        series has no calls; a guard is NaN when more breaching calls are needed than there are calls. ``ttft``:
        of time to first token instead of latency; ``guards=False`` leaves the guard columns NaN (not needed);
        ``codes``: the series' codes, when the caller has them.

        Exactly what merging each series' slot sketches and asking ``LatencySketch.quantiles`` gives
        (``_computed_quantiles``), kept per series until its window changes (``WindowCache``): the timer asks
        every series every few seconds, and most did not change since.
        """
        slots = self.ttft if ttft else self.latency
        cache = self._windows.get((window_s, ttft, guards))
        if cache is None:
            cache = self._windows[(window_s, ttft, guards)] = WindowCache(1 + len(QUANTILES) + 2)

        def compute(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            count, figures, until = self._computed_quantiles(keys, window_s, now_ms, ttft, guards)
            return np.column_stack((count, figures)), until

        codes = self.index.codes(series) if codes is None else codes
        rows = cache.rows(slots, series, codes, now_ms // slots.interval_ms, compute)
        return rows[:, 0].astype(np.int64), rows[:, 1:]

    def _computed_quantiles(self, series: Sequence[str], window_s: int, now_ms: int, ttft: bool,
                            guards: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``window_quantiles`` computed (the union of each series' slot sketches, ``SketchUnion``), and the slot
        of time until which each series' window holds the same slots."""
        config = self.config
        n = len(series)
        union = SketchUnion(n)
        slots = self.ttft if ttft else self.latency
        until = np.zeros(n, dtype=np.int64)
        for i, key in enumerate(series):
            parts, until[i] = slots.window_span(key, window_s, now_ms)
            union.add(i, parts)
        count = union.counts()
        qs = np.zeros((n, len(QUANTILES) + 2))
        qs[:, : len(QUANTILES)] = QUANTILES
        guards_off = np.zeros((n, 2), dtype=bool)
        guards_off[:] = not guards
        listed = count.tolist()
        for i in np.flatnonzero(count).tolist() if guards else ():
            c = listed[i]
            for j, (q, tail) in enumerate(((0.95, 0.05), (0.99, 0.01))):
                rank = (c - breaching_calls_needed(c, tail, config.breach_alpha, config.min_breaching_calls)) / max(
                    c - 1, 1)
                qs[i, len(QUANTILES) + j] = min(q, max(rank, 0.0))
                guards_off[i, j] = rank < 0
        figures = union.quantiles(qs)
        figures[:, len(QUANTILES):][guards_off] = np.nan
        return count, figures, until

    def gather(self, union: SketchUnion, owners: Sequence[int], series: Sequence[str], window_s: int,
               now_ms: int) -> None:
        """Add each series' latency window to ``union`` under its owner (e.g. its service's index)."""
        for owner, key in zip(owners, series, strict=True):
            union.add(owner, self.latency.window(key, window_s, now_ms))

    def series(self) -> list[str]:
        return self.latency.series()

    def restore(self, namespace: str, key: str, blob: bytes) -> bool:
        for slots in (self.latency, self.ttft):
            if slots.state.namespace == namespace:
                slots.restore(key, blob)
                return True
        return False

    def evict(self, now_ms: int) -> None:
        self.latency.evict(now_ms)
        self.ttft.evict(now_ms)

    def states(self) -> list:  # type: ignore[type-arg]
        return [self.latency.state, self.ttft.state]
