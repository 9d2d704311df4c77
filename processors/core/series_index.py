"""Series identity as small integer codes, shared by the monitors of one partition engine.

A monitor evaluates its rules for many series at once (one row per series, one column per rule) and builds an
``Observation`` only where a rule is breached or an incident is open on that (series, rule). What such an
observation needs from the series' string key, its labels in both orders and the fingerprint of each rule on
them, is computed once per series here instead of once per batch.

Codes live as long as the series does: ``release`` gives the codes of series every monitor has evicted back,
so the index stays as small as the active set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from llmpulse.processors.core.alert_policy import fingerprint
from llmpulse.processors.core.slots import series_parts


class SeriesIndex:
    """Series key <-> dense integer code, with each code's labels and per-rule fingerprints cached."""

    def __init__(self, label_names: Sequence[str]) -> None:
        self.label_names = tuple(label_names)
        self._codes: dict[str, int] = {}
        self._keys: list[str | None] = []
        self._labels: list[tuple[tuple[str, str], ...]] = []
        self._sorted: list[tuple[tuple[str, str], ...]] = []
        self._fingerprints: list[dict[str, str]] = []
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._codes)

    def code(self, key: str) -> int:
        code = self._codes.get(key)
        if code is not None:
            return code
        labels = tuple(zip(self.label_names, series_parts(key), strict=True))
        if self._free:
            code = self._free.pop()
            self._keys[code], self._labels[code], self._sorted[code] = key, labels, tuple(sorted(labels))
            self._fingerprints[code] = {}
        else:
            code = len(self._keys)
            self._keys.append(key)
            self._labels.append(labels)
            self._sorted.append(tuple(sorted(labels)))
            self._fingerprints.append({})
        self._codes[key] = code
        return code

    def codes(self, keys: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.code(key) for key in keys), dtype=np.int64)

    def key(self, code: int) -> str:
        key = self._keys[code]
        if key is None:
            raise KeyError(f"series code {code} was released")
        return key

    def labels(self, code: int) -> tuple[tuple[str, str], ...]:
        """Labels in the series' own order (service, model, provider), as observations carry them."""
        return self._labels[code]

    def sorted_labels(self, code: int) -> tuple[tuple[str, str], ...]:
        """Labels sorted by name: how the alert policy keys an incident (``AlertPolicy.open_rules``)."""
        return self._sorted[code]

    def fingerprint(self, code: int, rule: str) -> str:
        cached = self._fingerprints[code]
        fp = cached.get(rule)
        if fp is None:
            fp = cached[rule] = fingerprint(rule, self._labels[code])
        return fp

    def release(self, keys: Iterable[str]) -> None:
        """Forget series no monitor holds any more; their codes are reused."""
        for key in keys:
            code = self._codes.pop(key, None)
            if code is not None:
                self._keys[code] = None
                self._fingerprints[code] = {}
                self._free.append(code)

    def retain(self, active: Iterable[str]) -> int:
        """Release every series not in ``active``; returns how many went."""
        keep = set(active)
        gone = [key for key in self._codes if key not in keep]
        self.release(gone)
        return len(gone)
