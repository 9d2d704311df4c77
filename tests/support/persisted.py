"""Rebuild state as a restarted worker does: every persisted (key, blob) restored into a fresh object."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Restorable(Protocol):
    def restore(self, key: str, blob: bytes) -> None: ...


class Draining(Protocol):
    def drain_state(self) -> Iterable[tuple[str, bytes | None]]: ...


R = TypeVar("R", bound=Restorable)


def restored(fresh: R, persisted: Iterable[tuple[str, bytes | None]]) -> R:
    """``fresh`` after restoring each blob of ``persisted`` in order; a deleted key (None) restores nothing, as a
    compacted changelog holds nothing for it."""
    for key, blob in persisted:
        if blob is not None:
            fresh.restore(key, blob)
    return fresh


def persist(engine: Draining, table: dict[str, bytes]) -> None:
    """Write the engine's changed state into ``table`` as the store writes its changelog: a deletion removes."""
    for key, blob in engine.drain_state():
        if blob is None:
            table.pop(key, None)
        else:
            table[key] = blob
