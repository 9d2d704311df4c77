"""The service's answer cache: each answer lives ``ttl_s`` seconds, the oldest goes first when the cache is full.

A hit makes no LLM call, so the service records it as an llm_call with ``cache_hit=True`` and ``cost_micros=0``
(schemas/llm_call.v2.avsc), which the processors count as a cache hit that cost nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


def cache_key(question: str) -> str:
    """Questions that differ only in case and spacing share an answer."""
    return " ".join(question.lower().split())


class TTLCache(Generic[V]):
    """In-memory answers by key. Every entry has the same lifetime, so insertion order is expiry order: the
    expired and the oldest entries are always at the front. Not thread-safe (the service runs on one event loop)."""

    def __init__(self, ttl_s: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        """The live entry for ``key``, else None (an expired entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        return value

    def put(self, key: str, value: V) -> None:
        now = self._clock()
        self._entries.pop(key, None)
        self._entries[key] = (now + self.ttl_s, value)
        while self._entries:
            oldest_expiry, _ = next(iter(self._entries.values()))
            if oldest_expiry > now and len(self._entries) <= self.max_entries:
                break
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
