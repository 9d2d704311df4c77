"""Windowed rates per (service, model, provider): errors, cost and tokens per request, no-answer, cache
hits, and the guard verdict counts. One small integer vector per series per time slot (see slots.py).

Rules (defaults from the seeds): error ratio over the window >= 5% WARNING, >= 10% CRITICAL; mean cost
per request > $0.015 WARNING; no-answer ratio > 20% WARNING; guard counts over the window (injection,
hallucination, PII, unsafe content).

Mean tokens per request (prompt + response): above ``token_average_limit`` (500, seed 004's token limiter) it is
INFO, recorded and never paging, because realistic services average 1,000-97,000 tokens per request and a 500
limit would fire on normal traffic; above ``token_average_warning`` it is WARNING, and that limit is off
(None or 0) unless the user sets one. Either limit at 0 turns its level off.

Rules run on columns: ``observe_series`` sums the window of every series into a (series x column) matrix,
judges every rule on it at once, and builds an ``Observation`` only where a rule is breached or an incident is
open on it; ``observe`` is the same for one series, every rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.counter_bytes import decode_bucket_counts, pack_counts, unpack_counts
from llmpulse.processors.core.grouping import first_of_runs, unique_inverse
from llmpulse.processors.core.latency import _NO_OPEN, LatencyConfig, OpenRules, window_label
from llmpulse.processors.core.series_index import SeriesIndex
from llmpulse.processors.core.significance import breaching_calls_needed
from llmpulse.processors.core.slots import SlotSeries, series_parts
from llmpulse.processors.core.window_cache import WindowCache

COLUMNS: tuple[str, ...] = (
    "requests", "errors", "timeouts", "rate_limited", "filtered", "cache_hits", "no_answer",
    "cost_micros", "priced", "tokens", "injection", "hallucination", "pii", "toxic",
    "denied",  # appended: persisted vectors are positional (CounterVector.from_bytes tolerates added columns)
)
INDEX = {name: i for i, name in enumerate(COLUMNS)}
_COMPACT = b"\x02"  # CounterVector's first compact format (counter_bytes.encode_bucket_counts), still read
_VARINTS = b"\x03"  # CounterVector's format now: counter_bytes.pack_counts
LABELS = ("service", "model", "provider")


class CounterVector:
    """A fixed vector of int64 counts; persisted sparse: a version byte, then the non-zero counters as varints
    (counter_bytes.pack_counts), ~10 bytes for a slot of a few calls instead of 120 (or 20 in the first compact
    format, fixed-width counters after a 4-byte length, still read).

    The first format was the raw little-endian int64 vector, always a multiple of 8 bytes long; the compact ones
    are padded to never be, which is how ``from_bytes`` tells them apart (it reads all three)."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray | None = None) -> None:
        self.values = np.zeros(len(COLUMNS), dtype=np.int64) if values is None else values

    def to_bytes(self) -> bytes:
        blob = _VARINTS + pack_counts(self.values)
        return blob + b"\0" if len(blob) % 8 == 0 else blob

    def merge(self, other: CounterVector) -> None:
        """Add ``other``'s counts (folding slots, slots.py)."""
        self.values += other.values

    @classmethod
    def from_bytes(cls, blob: bytes) -> CounterVector:
        values = np.zeros(len(COLUMNS), dtype=np.int64)
        if len(blob) % 8:
            if blob[:1] == _VARINTS:
                stored, _end = unpack_counts(blob, 1)
            elif blob[:1] == _COMPACT:
                stored, _end = decode_bucket_counts(blob, 1)
            else:
                raise ValueError("not a CounterVector serialization")
        else:  # the first format
            stored = np.frombuffer(blob, dtype="<i8")
        values[: min(stored.size, values.size)] = stored[: values.size]  # tolerate added columns
        return cls(values)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficConfig:
    window_s: int = 300
    # The recent part of the window that says a breach is still happening. A rule fires while its window
    # breaches and this recent part shows the condition too (or breaches significantly on its own, which
    # catches a sharp onset before the long window does), so a condition that has stopped clears within
    # ``active_window_s`` instead of waiting for the long window to forget it.
    active_window_s: int = 60
    # The latency monitor's slot grid, not a setting of its own: one slot interval, one horizon.
    interval_s: int = LatencyConfig().interval_s
    horizon_s: int = max(LatencyConfig().windows_s)
    exact_s: int = LatencyConfig().exact_s  # slots further behind a series' newest call fold (slots.py)
    fold_s: int = LatencyConfig().fold_s
    min_requests: int = 50
    error_warning_ratio: float = 0.05
    error_critical_ratio: float = 0.10
    breach_alpha: float = 0.001  # an error ratio breaches only beyond what chance gives at the threshold
    cost_per_request_warning_micros: int = 15_000
    no_answer_warning_ratio: float = 0.20
    token_average_limit: int = 500  # INFO above it (0: off)
    token_average_warning: int | None = None  # WARNING above it; None or 0: never
    injection_warning_count: int = 5
    hallucination_warning_count: int = 3
    pii_warning_count: int = 1
    unsafe_warning_count: int = 3


RULES = ("error_rate", "cost_per_request", "no_answer_rate", "token_average", "prompt_injection", "hallucination",
         "pii_leak", "unsafe_content")
_GUARD_RULES = (
    ("prompt_injection", "injection", "injection_warning_count", "prompt-injection attempts"),
    ("hallucination", "hallucination", "hallucination_warning_count", "unhedged high-risk claims"),
    ("pii_leak", "pii", "pii_warning_count", "calls carrying PII"),
    ("unsafe_content", "toxic", "unsafe_warning_count", "unsafe-content hits"),
)
_SEVERITY_CODES = (None, "INFO", "WARNING", "CRITICAL")  # 0: clear


class TrafficMonitor:
    def __init__(self, config: TrafficConfig, index: SeriesIndex | None = None) -> None:
        self.config = config
        self.index = index or SeriesIndex(LABELS)
        # Slots are kept as long as a rule reads them (plus a minute for event time lagging the clock), not for
        # The latency grid's whole horizon, although the rules look back ``window_s`` only: the horizon is also
        # how late a call may arrive (behind the newest one) and still count, e.g. while a worker catches up.
        exact_s = max(config.exact_s, config.window_s, config.active_window_s)  # every window the rules read: exact
        self.slots = SlotSeries("traffic", config.interval_s, config.horizon_s, CounterVector, CounterVector.from_bytes,
                                CounterVector.merge, exact_s, config.fold_s)
        self._windows: dict[int, WindowCache] = {}  # window_s -> kept totals

    def update(self, series: list[str], inverse: np.ndarray, timestamps_ms: np.ndarray,
               counts: dict[str, np.ndarray], offset: int, now_ms: int) -> None:
        """``counts[column][i]`` is call i's contribution to that column (bool or int arrays)."""
        slots = self.slots.slots_of(timestamps_ms)
        base = int(slots.min())
        combined = inverse.astype(np.int64) * (1 << 40) + (slots - base)
        groups, group_of = unique_inverse(combined)
        matrix = np.zeros((len(groups), len(COLUMNS)), dtype=np.int64)
        for name, values in counts.items():
            np.add.at(matrix[:, INDEX[name]], group_of, values.astype(np.int64))
        for g, code in enumerate(groups.tolist()):
            vector = self.slots.for_update(series[code >> 40], base + (code & ((1 << 40) - 1)), offset, now_ms)
            if vector is not None:
                vector.values += matrix[g]

    def totals(self, series: str, window_s: int, now_ms: int) -> dict[str, int]:
        parts = self.slots.window(series, window_s, now_ms)
        summed = np.sum([p.values for p in parts], axis=0) if parts else np.zeros(len(COLUMNS), dtype=np.int64)
        return dict(zip(COLUMNS, summed.tolist(), strict=True))

    def window_matrix(self, series: Sequence[str], window_s: int, now_ms: int,
                      codes: np.ndarray | None = None) -> np.ndarray:
        """Totals over the window, one row per series, one column per COLUMNS; kept per series until its window
        changes (``WindowCache``). ``codes``: the series' codes, when the caller has them."""
        cache = self._windows.get(window_s)
        if cache is None:
            cache = self._windows[window_s] = WindowCache(len(COLUMNS), np.int64)

        def compute(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            return self._computed_matrix(keys, window_s, now_ms)

        codes = self.index.codes(series) if codes is None else codes
        return cache.rows(self.slots, series, codes, now_ms // self.slots.interval_ms, compute)

    def _computed_matrix(self, series: Sequence[str], window_s: int, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """``window_matrix`` computed, and the slot of time until which each series' window holds the same slots."""
        rows, owners = [], []  # every slot vector in a window, series by series
        until = np.zeros(len(series), dtype=np.int64)
        for i, key in enumerate(series):
            parts, until[i] = self.slots.window_span(key, window_s, now_ms)
            rows += [p.values for p in parts]
            owners += [i] * len(parts)
        out = np.zeros((len(series), len(COLUMNS)), dtype=np.int64)
        if rows:
            owner = np.asarray(owners)
            starts = np.flatnonzero(first_of_runs(owner))
            out[owner[starts]] = np.add.reduceat(np.concatenate(rows).reshape(-1, len(COLUMNS)), starts, axis=0)
        return out, until

    def observe(self, series: str, now_ms: int) -> list[Observation]:
        """Every rule for one series (clear ones included)."""
        return self.observe_series([series], now_ms, emit_all=True).get(0, [])

    def observe_series(self, series: Sequence[str], now_ms: int, open_rules: OpenRules = _NO_OPEN,
                       emit_all: bool = False) -> dict[int, list[Observation]]:
        """Every rule for every series at once (a series x rule severity matrix); position in ``series`` -> its
        observations, only where a rule is breached or ``open_rules`` holds an incident on it (all with
        ``emit_all``)."""
        if not series:
            return {}
        c = self.config
        codes = self.index.codes(series)
        t = self.window_matrix(series, c.window_s, now_ms, codes)
        short_s = min(c.active_window_s, c.window_s)
        r = self.window_matrix(series, short_s, now_ms, codes) if short_s < c.window_s else t  # the recent part
        severity = self._severities(t, r)
        wanted = np.flatnonzero(severity.any(axis=1)) if not (emit_all or open_rules) else np.arange(len(series))
        out: dict[int, list[Observation]] = {}
        for i in wanted.tolist():
            code = int(codes[i])
            held = open_rules.get(self.index.sorted_labels(code), frozenset())
            rules = [j for j, rule in enumerate(RULES) if severity[i, j] or emit_all or rule in held]
            if rules:
                out[i] = self._observations(series[i], code, rules, severity[i].tolist(), t[i], r[i], now_ms)
        return out

    def _severities(self, t: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Severity codes (index into _SEVERITY_CODES) per series (rows) and rule (RULES, columns)."""
        c = self.config
        col = INDEX
        out = np.zeros((t.shape[0], len(RULES)), dtype=np.int8)
        n, n_recent = t[:, col["requests"]], r[:, col["requests"]]
        enough = n >= c.min_requests
        failed, ratio = _failure_columns(t)
        failed_recent, ratio_now = _failure_columns(r)
        error = np.zeros(t.shape[0], dtype=np.int8)
        for level, limit in ((2, c.error_warning_ratio), (3, c.error_critical_ratio)):  # the higher level wins
            over_window = self._breach_columns(n, failed, ratio, limit) & (ratio_now >= limit)
            over_recent = self._breach_columns(n_recent, failed_recent, ratio_now, limit)
            error[over_window | over_recent] = level
        out[:, 0] = error
        limit = c.cost_per_request_warning_micros
        priced, priced_recent = t[:, col["priced"]], r[:, col["priced"]]
        expensive = (_ratio(t[:, col["cost_micros"]], priced) > limit) & (
            (priced_recent == 0) | (_ratio(r[:, col["cost_micros"]], priced_recent) > limit))
        out[:, 1] = np.where(enough & expensive, 2, 0)
        limit_ratio = c.no_answer_warning_ratio
        evasive = (_ratio(t[:, col["no_answer"]], n) > limit_ratio) & (
            (n_recent == 0) | (_ratio(r[:, col["no_answer"]], n_recent) > limit_ratio))
        out[:, 2] = np.where(enough & evasive, 2, 0)
        tokens = _ratio(t[:, col["tokens"]], n)
        token_level = np.zeros(t.shape[0], dtype=np.int8)
        if c.token_average_limit:
            token_level[enough & (tokens > c.token_average_limit)] = 1
        if c.token_average_warning:
            token_level[enough & (tokens > c.token_average_warning)] = 2
        out[:, 3] = token_level
        for j, (_rule, column, setting, _noun) in enumerate(_GUARD_RULES, start=4):
            ongoing = (t[:, col[column]] >= getattr(c, setting)) & (r[:, col[column]] > 0)
            out[:, j] = np.where(ongoing, 2, 0)
        return out

    def _breach_columns(self, n: np.ndarray, failed: np.ndarray, ratio: np.ndarray, limit: float) -> np.ndarray:
        """``_breaches`` for every series at once (the recent-part condition applied by the caller)."""
        c = self.config
        candidate = (n >= c.min_requests) & (ratio >= limit)
        needed = np.zeros(n.shape, dtype=np.int64)
        for i in np.flatnonzero(candidate).tolist():
            needed[i] = breaching_calls_needed(int(n[i]), limit, c.breach_alpha, 1)
        return candidate & (failed >= needed)

    def _observations(self, series: str, code: int, rules: list[int], severity: list[int], totals: np.ndarray,
                      recent_totals: np.ndarray, now_ms: int) -> list[Observation]:
        """The observations of the chosen rules (indices into RULES) for one series."""
        c = self.config
        t = dict(zip(COLUMNS, totals.tolist(), strict=True))
        r = dict(zip(COLUMNS, recent_totals.tolist(), strict=True))
        labels = self.index.labels(code)
        where = "/".join(series_parts(series))
        short_s = min(c.active_window_s, c.window_s)
        window, recent = window_label(c.window_s), window_label(short_s)
        n = t["requests"]
        out = []
        for j in rules:
            rule, level = RULES[j], _SEVERITY_CODES[severity[j]]
            fp = self.index.fingerprint(code, rule)
            if rule == "error_rate":
                failed, ratio = _failures(t)
                _, ratio_now = _failures(r)
                out.append(Observation(
                    rule, labels, level, ratio, c.error_warning_ratio, window,
                    f"error rate {ratio:.1%} over {window}, {ratio_now:.1%} over the last {recent} for {where} "
                    f"({failed}/{n}: {t['errors']} errors, {t['timeouts']} timeouts, "
                    f"{t['rate_limited']} rate-limited)", now_ms, fp))
            elif rule == "cost_per_request":
                per_request = _per(t, "cost_micros", "priced")
                out.append(Observation(rule, labels, level, per_request / 1e6, c.cost_per_request_warning_micros / 1e6,
                                       window, f"mean cost ${per_request / 1e6:.4f}/request over {window} for {where}",
                                       now_ms, fp))
            elif rule == "no_answer_rate":
                no_answer = _per(t, "no_answer", "requests")
                out.append(Observation(rule, labels, level, no_answer, c.no_answer_warning_ratio, window,
                                       f"'I don't know' rate {no_answer:.1%} over {window} for {where}", now_ms, fp))
            elif rule == "token_average":
                tokens = _per(t, "tokens", "requests")
                limit = c.token_average_warning if level == "WARNING" else c.token_average_limit
                out.append(Observation(rule, labels, level, tokens, float(limit or 0), window,
                                       f"{tokens:.0f} tokens/request (prompt+response) over {window} for {where}",
                                       now_ms, fp))
            else:
                _, column, setting, noun = _GUARD_RULES[j - 4]
                count = t[column]
                out.append(Observation(rule, labels, level, float(count), float(getattr(c, setting)), window,
                                       f"{count} {noun} over {window} for {where}", now_ms, fp))
        return out

    def series(self) -> list[str]:
        return self.slots.series()


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0.0 where the denominator is 0 (as ``_per``)."""
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator != 0)


def _failure_columns(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    failed = totals[:, INDEX["errors"]] + totals[:, INDEX["timeouts"]] + totals[:, INDEX["rate_limited"]]
    return failed, _ratio(failed, totals[:, INDEX["requests"]])


def _failures(totals: dict[str, int]) -> tuple[int, float]:
    failed = totals["errors"] + totals["timeouts"] + totals["rate_limited"]
    return failed, failed / totals["requests"] if totals["requests"] else 0.0


def _per(totals: dict[str, int], column: str, per: str) -> float:
    return totals[column] / totals[per] if totals[per] else 0.0
