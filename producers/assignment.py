"""Deterministic A/B assignment: the same unit (user, session, account) always gets the same variant.

    variant = pulse.assign_variant("prompt-v2", user_id)                       # control / treatment, 50/50
    variant = pulse.assign_variant("prompt-v2", user_id, {"control": 0.9, "treatment": 0.1})

The unit id and the experiment name are hashed together (SHA-256, first 8 bytes as a fraction of 2^64), so
assignment needs no state or coordination, is independent across experiments, and changing one experiment's
split moves only the units whose fraction crosses a boundary. Record the variant with the call
(``experiment_id`` and ``variant``) and the worker compares the arms (processors/core/experiments.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

DEFAULT_SPLITS: Mapping[str, float] = {"control": 0.5, "treatment": 0.5}


def bucket(experiment: str, unit_id: str) -> float:
    """The unit's fraction in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment}\x1f{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def normalized(splits: Mapping[str, float] | Sequence[str] | None) -> list[tuple[str, float]]:
    """(variant, weight) summing to 1; a sequence of names splits equally. ValueError on an unusable split."""
    if splits is None:
        splits = DEFAULT_SPLITS
    pairs = [(name, 1.0) for name in splits] if not isinstance(splits, Mapping) else list(splits.items())
    if not pairs or any(not (w >= 0) for _, w in pairs) or sum(w for _, w in pairs) <= 0:
        raise ValueError(f"splits need at least one variant and non-negative weights, got {splits!r}")
    total = sum(w for _, w in pairs)
    return [(str(name), w / total) for name, w in pairs]


def assign_variant(experiment: str, unit_id: str,
                   splits: Mapping[str, float] | Sequence[str] | None = None) -> str:
    """The variant of ``unit_id`` in ``experiment`` under ``splits`` (weights, normalised)."""
    point = bucket(experiment, str(unit_id))
    edge = 0.0
    pairs = normalized(splits)
    for name, weight in pairs:
        edge += weight
        if point < edge:
            return name
    return pairs[-1][0]
