"""Windowed rates per (service, model, provider): errors, cost and tokens per request, no-answer, cache
hits, and the guard verdict counts. One small integer vector per series per time slot (see slots.py).

Rules (defaults from the seeds): error ratio over the window >= 5% WARNING, >= 10% CRITICAL; mean cost
per request > $0.015 WARNING; no-answer ratio > 20% WARNING; guard counts over the window (injection,
hallucination, PII, unsafe content).

Mean tokens per request (prompt + response): above ``token_average_limit`` (500, seed 004's token limiter) it is
INFO, recorded and never paging, because realistic services average 1,000-97,000 tokens per request and a 500
limit would fire on normal traffic; above ``token_average_warning`` it is WARNING, and that limit is off
(None or 0) unless the user sets one. Either limit at 0 turns its level off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.latency import LatencyConfig, window_label
from llmpulse.processors.core.significance import breaching_calls_needed
from llmpulse.processors.core.slots import SlotSeries, series_parts

COLUMNS: tuple[str, ...] = (
    "requests", "errors", "timeouts", "rate_limited", "filtered", "cache_hits", "no_answer",
    "cost_micros", "priced", "tokens", "injection", "hallucination", "pii", "toxic",
    "denied",  # appended: persisted vectors are positional (CounterVector.from_bytes tolerates added columns)
)
INDEX = {name: i for i, name in enumerate(COLUMNS)}
LABELS = ("service", "model", "provider")


class CounterVector:
    """A fixed vector of int64 counts; persisted as its raw little-endian bytes."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray | None = None) -> None:
        self.values = np.zeros(len(COLUMNS), dtype=np.int64) if values is None else values

    def to_bytes(self) -> bytes:
        return self.values.astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> CounterVector:
        values = np.zeros(len(COLUMNS), dtype=np.int64)
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


def _obs(rule: str, labels: tuple[tuple[str, str], ...], severity: str | None, observed: float,
         threshold: float, window: str, summary: str, now_ms: int) -> Observation:
    return Observation(rule, labels, severity, observed, threshold, window, summary, now_ms)


class TrafficMonitor:
    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        self.slots = SlotSeries("traffic", config.interval_s, config.horizon_s, CounterVector, CounterVector.from_bytes)

    def update(self, series: list[str], inverse: np.ndarray, timestamps_ms: np.ndarray,
               counts: dict[str, np.ndarray], offset: int, now_ms: int) -> None:
        """``counts[column][i]`` is call i's contribution to that column (bool or int arrays)."""
        slots = self.slots.slots_of(timestamps_ms)
        base = int(slots.min())
        combined = inverse.astype(np.int64) * (1 << 40) + (slots - base)
        groups, group_of = np.unique(combined, return_inverse=True)
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

    def observe(self, series: str, now_ms: int) -> list[Observation]:
        c = self.config
        t = self.totals(series, c.window_s, now_ms)
        short_s = min(c.active_window_s, c.window_s)
        r = self.totals(series, short_s, now_ms) if short_s < c.window_s else t  # the recent part
        labels = tuple(zip(LABELS, series_parts(series), strict=True))
        where = "/".join(series_parts(series))
        window, recent = window_label(c.window_s), window_label(short_s)
        n = t["requests"]
        enough = n >= c.min_requests
        out = []
        failed, ratio = _failures(t)
        _, ratio_now = _failures(r)
        severity = None
        for level, limit in (("CRITICAL", c.error_critical_ratio), ("WARNING", c.error_warning_ratio)):
            if self._breaches(t, limit, ratio_now >= limit) or self._breaches(r, limit, True):
                severity = level
                break
        out.append(_obs("error_rate", labels, severity, ratio, c.error_warning_ratio, window,
                        f"error rate {ratio:.1%} over {window}, {ratio_now:.1%} over the last {recent} for {where} "
                        f"({failed}/{n}: {t['errors']} errors, {t['timeouts']} timeouts, "
                        f"{t['rate_limited']} rate-limited)", now_ms))
        per_request = _per(t, "cost_micros", "priced")
        expensive = per_request > c.cost_per_request_warning_micros and (
            not r["priced"] or _per(r, "cost_micros", "priced") > c.cost_per_request_warning_micros)
        out.append(_obs("cost_per_request", labels, "WARNING" if enough and expensive else None,
                        per_request / 1e6, c.cost_per_request_warning_micros / 1e6, window,
                        f"mean cost ${per_request / 1e6:.4f}/request over {window} for {where}", now_ms))
        no_answer = _per(t, "no_answer", "requests")
        evasive = no_answer > c.no_answer_warning_ratio and (
            not r["requests"] or _per(r, "no_answer", "requests") > c.no_answer_warning_ratio)
        out.append(_obs("no_answer_rate", labels, "WARNING" if enough and evasive else None,
                        no_answer, c.no_answer_warning_ratio, window,
                        f"'I don't know' rate {no_answer:.1%} over {window} for {where}", now_ms))
        tokens = _per(t, "tokens", "requests")
        severity, limit = None, c.token_average_limit
        if enough and c.token_average_warning and tokens > c.token_average_warning:
            severity, limit = "WARNING", c.token_average_warning
        elif enough and c.token_average_limit and tokens > c.token_average_limit:
            severity = "INFO"
        out.append(_obs("token_average", labels, severity, tokens, float(limit), window,
                        f"{tokens:.0f} tokens/request (prompt+response) over {window} for {where}", now_ms))
        for rule, column, limit, noun in (
            ("prompt_injection", "injection", c.injection_warning_count, "prompt-injection attempts"),
            ("hallucination", "hallucination", c.hallucination_warning_count, "unhedged high-risk claims"),
            ("pii_leak", "pii", c.pii_warning_count, "calls carrying PII"),
            ("unsafe_content", "toxic", c.unsafe_warning_count, "unsafe-content hits"),
        ):
            count = t[column]
            ongoing = count >= limit and r[column] > 0  # the last one inside the recent part: still going on
            out.append(_obs(rule, labels, "WARNING" if ongoing else None, float(count), float(limit),
                            window, f"{count} {noun} over {window} for {where}", now_ms))
        return out

    def series(self) -> list[str]:
        return self.slots.series()

    def _breaches(self, totals: dict[str, int], limit: float, recent_agrees: bool) -> bool:
        """Enough calls, a failure ratio at ``limit`` or above, more failures than a series failing at exactly
        ``limit`` shows by chance (significance.py), and the recent part of the window agreeing."""
        n = totals["requests"]
        failed, ratio = _failures(totals)
        return (recent_agrees and n >= self.config.min_requests and ratio >= limit
                and failed >= breaching_calls_needed(n, limit, self.config.breach_alpha, 1))


def _failures(totals: dict[str, int]) -> tuple[int, float]:
    failed = totals["errors"] + totals["timeouts"] + totals["rate_limited"]
    return failed, failed / totals["requests"] if totals["requests"] else 0.0


def _per(totals: dict[str, int], column: str, per: str) -> float:
    return totals[column] / totals[per] if totals[per] else 0.0
