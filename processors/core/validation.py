"""Vectorised sanity checks on a batch of calls: which calls are malformed, and why.

A call that fails any check is refused alone (its batch-mates are processed); the reason names the first
failed check in a form an operator can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.columns import NO_COST, STATUSES, CallColumns


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_name_chars: int = 256  # service, provider and model
    max_text_chars: int = 100_000  # prompt and response
    max_labels: int = 32
    max_label_chars: int = 256  # each label's key and value
    max_latency_ms: float = 3_600_000.0
    max_tokens: int = 10_000_000  # input, output and cached tokens each
    max_future_skew_s: int = 300  # a call stamped later than this after the worker's clock is refused ...
    max_age_s: int = 7 * 24 * 3600  # ... and one older than this


NAMES = ("service", "provider", "model")  # the name columns find_invalid checks (by their dictionary when coded)


def _lengths(values: np.ndarray) -> np.ndarray:
    present = values != None  # noqa: E711
    out = np.zeros(len(values), dtype=np.int64)
    if present.any():
        out[present] = np.fromiter(map(len, values[present]), dtype=np.int64, count=int(present.sum()))
    return out


def _column_lengths(calls: CallColumns, name: str) -> np.ndarray:
    """Lengths of a string column; for dictionary-encoded columns, measured once per distinct value."""
    known = calls.codes.get(name)
    if known is None:
        return _lengths(getattr(calls, name))
    codes, values = known
    return _lengths(values)[codes]  # code -1 picks the trailing None slot: length 0


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(values: np.ndarray) -> np.ndarray:
    return np.fromiter((v is not None and _CONTROL.search(v) is not None for v in values), dtype=bool,
                       count=len(values))


def _column_has_control(calls: CallColumns, name: str) -> np.ndarray:
    """Names carrying control characters (checked once per distinct value). They would corrupt series keys,
    which join names with \\x1f, and they are never a legitimate service, provider or model name."""
    known = calls.codes.get(name)
    if known is None:
        return _has_control(getattr(calls, name))
    codes, values = known
    return _has_control(values)[codes]


def _label_sizes(labels: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    counts = np.fromiter((len(m) for m in labels), dtype=np.int64, count=len(labels))
    longest = np.fromiter(
        (max((max(len(k), len(v)) for k, v in m.items()), default=0) for m in labels),
        dtype=np.int64,
        count=len(labels),
    )
    return counts, longest


def find_invalid(calls: CallColumns, limits: Limits, now_ms: int) -> np.ndarray:
    """Object array, one entry per call: None when valid, else the reason it was refused (its first failed
    check). The checks are judged first and the reasons written only where one failed: nearly every batch is
    valid, and comparing the object array of reasons with None after every check was most of their cost."""
    failed: list[tuple[np.ndarray, str]] = []

    def check(bad: np.ndarray, reason: str) -> None:
        if bad.any():
            failed.append((bad, reason))

    status = calls.status
    check((status < 0) | (status >= len(STATUSES)), f"status must be a code in 0..{len(STATUSES) - 1}")
    latency, ttft = calls.latency_ms, calls.ttft_ms
    check(~np.isfinite(latency) | (latency < 0), "latency_ms must be a finite number >= 0")
    check(latency > limits.max_latency_ms, f"latency_ms exceeds {limits.max_latency_ms:.0f}")
    check(np.isinf(ttft) | (ttft < 0) | (ttft > latency), "ttft_ms must be finite, >= 0 and <= latency_ms")
    for name in ("input_tokens", "output_tokens", "cached_tokens"):
        tokens = getattr(calls, name)
        check((tokens < 0) | (tokens > limits.max_tokens), f"{name} must be in [0, {limits.max_tokens}]")
    check((calls.cost_micros < 0) & (calls.cost_micros != NO_COST), "cost_micros must be >= 0")
    confidence = calls.confidence
    check(np.isinf(confidence) | (confidence < 0) | (confidence > 1), "confidence must be in [0, 1]")
    skew_ms, age_ms = limits.max_future_skew_s * 1000, limits.max_age_s * 1000
    check(calls.timestamp_ms > now_ms + skew_ms, f"timestamp_ms is more than {limits.max_future_skew_s}s ahead")
    check(calls.timestamp_ms < now_ms - age_ms, f"timestamp_ms is older than {limits.max_age_s}s")
    for name in NAMES:
        lengths = _column_lengths(calls, name)
        check((lengths == 0) | (lengths > limits.max_name_chars), f"{name} must be 1-{limits.max_name_chars} chars")
        check(_column_has_control(calls, name), f"{name} must not contain control characters")
    for name in ("prompt_text", "response_text"):
        check(_lengths(getattr(calls, name)) > limits.max_text_chars, f"{name} exceeds {limits.max_text_chars} chars")
    if calls.labels:
        counts, longest = _label_sizes(calls.labels)
        check(counts > limits.max_labels, f"more than {limits.max_labels} labels")
        check(longest > limits.max_label_chars, f"a label key or value exceeds {limits.max_label_chars} chars")
    reasons = np.full(len(calls), None, dtype=object)
    for bad, reason in reversed(failed):  # the first failed check writes last
        reasons[bad] = reason
    return reasons
