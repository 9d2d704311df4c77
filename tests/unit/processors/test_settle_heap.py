"""The worker settles its heap once built: what exists then is frozen out of the collector's reach, and young
collections run every GC_YOUNG_THRESHOLD new objects instead of CPython's 700."""

from __future__ import annotations

import gc
import weakref

from llmpulse.processors.startup import GC_YOUNG_THRESHOLD, settle_heap


class _Node:
    me: _Node


def _cycle() -> _Node:
    node = _Node()
    node.me = node
    return node


def test_objects_built_before_settling_are_left_alone_and_later_garbage_is_still_collected() -> None:
    threshold = gc.get_threshold()
    startup = [_cycle()]  # reachable when the worker settles, like its modules and models
    built = weakref.ref(startup[0])
    try:
        settle_heap()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        startup.clear()  # an unreachable cycle now, but frozen: no collection walks it
        gc.collect()
        assert built() is not None
        later = weakref.ref(_cycle())  # garbage made while processing is collected as before
        gc.collect()
        assert later() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    gc.collect()
    assert built() is None
