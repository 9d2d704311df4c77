"""State objects by key, each stamped with the last source offset it applied.

Delivery from Kafka is at-least-once: after a crash the worker re-reads records whose offsets were not yet
committed. Each persisted object carries the offset of the last record it absorbed, so a replayed record
changes nothing it already changed and everything it did not: exactly-once state without cross-key
atomicity. Objects are persisted (as ``offset || payload``) right after the record that dirtied them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Generic, Protocol, TypeVar

OFFSET = struct.Struct("<q")  # the stamp in front of every persisted object: the last source offset it absorbed
NEVER = -1


class Serializable(Protocol):
    def to_bytes(self) -> bytes: ...


T = TypeVar("T", bound=Serializable)


class PersistedState(Protocol):
    """What an engine drains after a group of records and restores at start: one namespace of keys, each blob
    stamped with the last source offset it absorbed (``OFFSET``)."""

    namespace: str

    def drain(self) -> Iterator[tuple[str, bytes | None]]: ...

    def restore(self, key: str, blob: bytes) -> None: ...


class KeyedState(Generic[T]):
    """One namespace of state (e.g. latency windows) inside one partition."""

    def __init__(self, namespace: str, create: Callable[[str], T], load: Callable[[bytes], T]) -> None:
        self.namespace = namespace
        self._create = create
        self._load = load
        self._items: dict[str, T] = {}
        self._applied: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()

    def restore(self, key: str, blob: bytes) -> None:
        """Load a persisted object (from the changelog) into memory."""
        (offset,) = OFFSET.unpack_from(blob, 0)
        self._items[key] = self._load(blob[OFFSET.size :])
        self._applied[key] = offset

    def for_update(self, key: str, offset: int) -> T | None:
        """The object to update for the record at ``offset``, or None if it already absorbed that record."""
        if self._applied.get(key, NEVER) >= offset:
            return None
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = self._create(key)
        self._applied[key] = offset
        self._dirty.add(key)
        self._deleted.discard(key)
        return item

    def touch(self, key: str) -> None:
        """Mark an object changed outside a record (e.g. a timer resolving an alert)."""
        if key in self._items:
            self._dirty.add(key)

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def get_or_create(self, key: str) -> T:
        """For reads and timers: the object, created empty (not yet dirty) when unknown."""
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = self._create(key)
        return item

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def fold(self, key: str, into: str, merge: Callable[[T, T], None]) -> T:
        """Merge ``key``'s object into ``into``'s (created when unknown) and delete ``key``. ``into`` keeps the
        later stamp of the two: it holds every record either absorbed, so a replay of any of them is skipped. It
        drains before the tombstone, so a crash in between leaves both, never neither (see SlotSeries.restore)."""
        target = self.get_or_create(into)
        merge(target, self._items[key])
        self._applied[into] = max(self._applied.get(into, NEVER), self._applied.get(key, NEVER))
        self._dirty.add(into)
        self._deleted.discard(into)
        self.delete(key)
        return target

    def delete(self, key: str) -> None:
        if self._items.pop(key, None) is not None:
            self._applied.pop(key, None)
            self._dirty.discard(key)
            self._deleted.add(key)

    def __len__(self) -> int:
        return len(self._items)

    def unwritten(self) -> bool:
        """Does ``drain`` have anything to write?"""
        return bool(self._dirty or self._deleted)

    def drain(self) -> Iterator[tuple[str, bytes | None]]:
        """(key, blob) for every changed object and (key, None) for every deleted one; then clean."""
        for key in self._dirty:
            yield key, OFFSET.pack(self._applied.get(key, NEVER)) + self._items[key].to_bytes()
        for key in self._deleted:
            yield key, None
        self._dirty.clear()
        self._deleted.clear()


class Admission(Enum):
    """What to do with the next record of a source partition (``SourceCursor.admit``)."""

    PROCESS = "process"
    ABSORBED = "absorbed"  # already absorbed and persisted (a replay): skip it
    REWIND = "rewind"  # records before it never arrived: skip it and seek back to the cursor


class SourceCursor:
    """The next source offset not yet absorbed; persisted after all the state it covers.

    Kafka's committed offset is only a hint, and faust's delivery has holes of its own: its gap bookkeeping
    can commit the offset of a record still waiting in a stream buffer (faust-streaming issue #606), and a
    record its stream skips around a rebalance can be committed past (``Consumer._new_offset`` tolerates one
    unacked offset at the head). So a worker taking over a partition commits this cursor before it reads
    (ownership.py), and a record arriving beyond the cursor is not processed: the agent seeks back to the cursor.
    After such a seek, records from before it may still arrive (faust buffers them); they are skipped and
    trigger another seek, until the first record at or before the one that revealed the hole shows up. If
    the offsets in between hold no records (transaction markers), that first record is the revealing one.
    """

    def __init__(self, next_offset: int | None = None) -> None:
        self.next_offset = next_offset
        self._dirty = False
        self._persisted = False
        self._rewinding_past: int | None = None  # the offset that revealed a hole, while seeking back

    def admit(self, offset: int) -> Admission:
        if self.next_offset is None:
            return Admission.PROCESS  # nothing persisted yet: the committed offset is all there is
        if offset < self.next_offset:
            return Admission.ABSORBED
        if self._rewinding_past is not None:
            if offset > self._rewinding_past:
                return Admission.REWIND  # delivered before our seek took effect
            self._rewinding_past = None
            return Admission.PROCESS
        if offset > self.next_offset:
            self._rewinding_past = offset
            return Admission.REWIND
        return Admission.PROCESS

    def covers(self, offset: int) -> bool:
        """Has the record at ``offset`` already been absorbed (and its effects persisted)?"""
        return self.next_offset is not None and offset < self.next_offset

    def advance(self, offset: int) -> None:
        if not self.covers(offset):
            self.next_offset = offset + 1
            self._dirty = True

    def hold_back(self, offset: int) -> None:
        """Records from ``offset`` on were admitted but not absorbed (they wait for a later group)."""
        self.next_offset = offset
        self._dirty = True

    @property
    def persisted(self) -> bool:
        """Has a cursor been persisted (drained, or restored) yet?"""
        return self._persisted

    def drain(self) -> bytes | None:
        """The blob to persist if the cursor moved since the last drain, else None."""
        if not self._dirty or self.next_offset is None:
            return None
        self._dirty = False
        self._persisted = True
        return OFFSET.pack(self.next_offset)

    @classmethod
    def from_bytes(cls, blob: bytes) -> SourceCursor:
        cursor = cls(OFFSET.unpack_from(blob, 0)[0])
        cursor._persisted = True
        return cursor
