"""Columnar view of a batch of LLM calls: the one shape every detector and ledger consumes.

Missing optional numbers are NaN (floats) or -1 (cost_micros); missing strings are None in object arrays.
Status is a small integer code so rates are vectorised comparisons, not string matches.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmpulse.processors.core.grouping import unique_inverse

STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "rate_limited", "filtered", "denied")
STATUS_CODE: dict[str, int] = {name: code for code, name in enumerate(STATUSES)}
# DENIED: refused by the SDK before any request (budget, limits, guard); not a request to the provider.
OK, ERROR, TIMEOUT, RATE_LIMITED, FILTERED, DENIED = range(len(STATUSES))
NO_COST = -1
_NOT_ARRAYS = ("labels", "codes", "_groups", "_range_of")


@dataclass(slots=True)
class CallColumns:
    """N calls as parallel arrays (index i of every array is call i)."""

    timestamp_ms: np.ndarray  # int64, Unix ms
    service: np.ndarray  # object[str]
    provider: np.ndarray  # object[str]
    model: np.ndarray  # object[str]: request model
    status: np.ndarray  # int8 codes into STATUSES
    latency_ms: np.ndarray  # float64
    ttft_ms: np.ndarray  # float64, NaN when not streamed
    input_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    cached_tokens: np.ndarray  # int64
    cost_micros: np.ndarray  # int64, NO_COST (-1) when the producer did not price it
    confidence: np.ndarray  # float64, NaN when absent
    cache_hit: np.ndarray  # bool
    no_answer: np.ndarray  # bool
    error_type: np.ndarray  # object[str | None]
    user_hash: np.ndarray  # object[str | None]
    experiment_id: np.ndarray  # object[str | None]
    variant: np.ndarray  # object[str | None]
    feature: np.ndarray  # object[str | None]
    prompt_text: np.ndarray  # object[str | None]
    response_text: np.ndarray  # object[str | None]
    event_id: np.ndarray  # object[str]
    labels: list[dict[str, str]] = field(default_factory=list)
    prompt_version: np.ndarray | None = None  # object[str | None]; None when the wire format has no such column
    # Dictionary codes of string columns as they came off the wire (name -> (int32 codes, values with a
    # trailing None for code -1)); lets group_by factorize with integer maths instead of string sorting.
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _groups: dict[tuple[str, ...], tuple[list[tuple[str | None, ...]], np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    # (whole, start, end) when these calls are ``whole.rows(start, end)``: views of its arrays, so ``concat`` of
    # adjacent ranges of one whole (a run of records decoded together) is a view again instead of a copy.
    _range_of: tuple[CallColumns, int, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.latency_ms.shape[0])

    def rows(self, start: int, end: int) -> CallColumns:
        """Calls ``start`` to ``end`` (exclusive) as views of these arrays (nothing is copied)."""
        whole, offset = (self, 0) if self._range_of is None else (self._range_of[0], self._range_of[1])
        picked = {name: getattr(self, name)[start:end]
                  for name in self.__dataclass_fields__ if name not in _NOT_ARRAYS and getattr(self, name) is not None}
        labels = self.labels[start:end]
        picked["labels"] = labels if any(labels) else []  # as a batch without labels has them
        picked["codes"] = {name: (codes[start:end], values) for name, (codes, values) in self.codes.items()}
        return CallColumns(**picked, _range_of=(whole, offset + start, offset + end))

    def take(self, index: np.ndarray) -> CallColumns:
        """The calls selected by a boolean mask or integer index, as a new CallColumns."""
        picked = {
            name: getattr(self, name)[index]
            for name in self.__dataclass_fields__
            if name not in _NOT_ARRAYS and getattr(self, name) is not None
        }
        positions = np.arange(len(self))[index]
        picked["labels"] = [self.labels[i] for i in positions] if self.labels else []
        picked["codes"] = {name: (codes[index], values) for name, (codes, values) in self.codes.items()}
        return CallColumns(**picked)

    @classmethod
    def concat(cls, parts: Sequence[CallColumns], coded: Collection[str] | None = None) -> CallColumns:
        """The calls of several batches, in order, as one: the engine absorbs a run of records in one pass.
        Wire dictionary codes are kept where every part has them (of the ``coded`` columns only, when given),
        renumbered over the union of their values."""
        if len(parts) == 1:
            return parts[0]
        spanned = _spanned(parts)
        if spanned is not None:
            return spanned
        arrays: dict[str, object] = {}
        for name in cls.__dataclass_fields__:
            if name in _NOT_ARRAYS:
                continue
            columns = [getattr(part, name) for part in parts]
            if all(column is None for column in columns):
                continue
            arrays[name] = np.concatenate([np.full(len(part), None, dtype=object) if column is None else column
                                           for part, column in zip(parts, columns, strict=True)])
        arrays["labels"] = ([labels for part in parts for labels in (part.labels or [{}] * len(part))]
                            if any(part.labels for part in parts) else [])
        common = set.intersection(*(set(part.codes) for part in parts))
        arrays["codes"] = {name: _merged_codes([part.codes[name] for part in parts])
                           for name in (common if coded is None else common.intersection(coded))}
        return cls(**arrays)  # type: ignore[arg-type]

    def factorize(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(codes, values) of a string column: values[codes] == column, codes are dense ints >= 0."""
        known = self.codes.get(name)
        if known is not None:
            codes, values = known
            return np.where(codes < 0, len(values) - 1, codes), values
        column = getattr(self, name)
        as_text = np.array(["\x00" if v is None else v for v in column], dtype=object)
        uniques, inverse = np.unique(as_text, return_inverse=True)
        values = np.array([None if u == "\x00" else u for u in uniques], dtype=object)
        return inverse.astype(np.int64), values

    def group_by(self, *names: str) -> tuple[list[tuple[str | None, ...]], np.ndarray]:
        """Distinct key tuples over ``names`` and, per call, the index of its key (vectorised, cached)."""
        cached = self._groups.get(names)
        if cached is None:
            cached = self._groups[names] = self._group_by(names)
        return cached

    def _group_by(self, names: tuple[str, ...]) -> tuple[list[tuple[str | None, ...]], np.ndarray]:
        combined = np.zeros(len(self), dtype=np.int64)
        factors = []
        for name in names:
            codes, values = self.factorize(name)
            combined = combined * len(values) + codes
            factors.append(values)
        uniques, inverse = unique_inverse(combined)
        keys = []
        for code in uniques.tolist():
            parts = []
            for values in reversed(factors):
                code, part = divmod(code, len(values))
                parts.append(values[part])
            keys.append(tuple(reversed(parts)))
        return keys, inverse


def _spanned(parts: Sequence[CallColumns]) -> CallColumns | None:
    """The calls of ``parts`` as one range of their whole when they are adjacent ranges of the same one, else None."""
    first, last = parts[0]._range_of, parts[-1]._range_of
    if first is None or last is None:
        return None
    end = first[1]
    for part in parts:
        span = part._range_of
        if span is None or span[0] is not first[0] or span[1] != end:
            return None
        end = span[2]
    return first[0].rows(first[1], last[2])


def _merged_codes(coded: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One dictionary for several (codes, values) columns (values end with None, code -1): each value once."""
    position: dict[object, int] = {}
    renumbered = []
    for codes, values in coded:
        remap = np.array([position.setdefault(value, len(position)) for value in values[:-1].tolist()] + [-1],
                         dtype=codes.dtype)
        renumbered.append(remap[codes])
    merged = np.empty(len(position) + 1, dtype=object)
    merged[:-1] = list(position)
    return np.concatenate(renumbered), merged
