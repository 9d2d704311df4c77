"""Columnar view of a batch of LLM calls: the one shape every detector and ledger consumes.

Missing optional numbers are NaN (floats) or -1 (cost_micros); missing strings are None in object arrays.
Status is a small integer code so rates are vectorised comparisons, not string matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "rate_limited", "filtered")
STATUS_CODE: dict[str, int] = {name: code for code, name in enumerate(STATUSES)}
OK, ERROR, TIMEOUT, RATE_LIMITED, FILTERED = range(len(STATUSES))
NO_COST = -1


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

    def __len__(self) -> int:
        return int(self.latency_ms.shape[0])

    def take(self, index: np.ndarray) -> CallColumns:
        """The calls selected by a boolean mask or integer index, as a new CallColumns."""
        picked = {
            name: getattr(self, name)[index]
            for name in self.__dataclass_fields__
            if name != "labels"
        }
        positions = np.arange(len(self))[index]
        picked["labels"] = [self.labels[i] for i in positions] if self.labels else []
        return CallColumns(**picked)
