"""SessionFence: may this worker still act for the partitions faust says it holds, after the process stood still?

A worker stopped as a whole (SIGSTOP, a paused VM, a host swapping) for longer than its consumer session is
expelled from the group while it cannot notice: its partitions move to the other workers, which go on writing
their state. When it runs again, faust still lists the old assignment until a heartbeat fails and the group
revokes it. Meanwhile the 5 s timer, the records buffered before the stop and then the revoke's hand-over would
each write the worker's stale state, its source cursor included, over what the partitions' new owner wrote. The
changelog then says the partition is back where the frozen worker stood, and its next owner replays from there.
(tests/reliability/test_frozen_worker.py: before this fence, partition 0's persisted cursor went back from 29 to
12 in 10 of 11 runs, and one of them counted $19.90 of spend twice.)

Kafka fences such a zombie with a transactional producer; the state is written without transactions
(changelog_writer.py), so the worker fences itself. A thread notes the time every ``STEP_S``. A gap longer than
half the session means the whole process stood still, this thread with it, long enough that the group may have
expelled the worker. The worker is then **in doubt**: it owns no partition (ownership.py) and writes no state
(engine_store.py). The doubt ends when the group assigns partitions again (a generation newer than the one held
at the stall), or after a whole session without one (the heartbeats went on succeeding: the group still counts
the worker in, and nothing it held moved).

A stall that only looks like one (the thread starved of the interpreter for half a session) costs a hold of one
session at most: records skipped meanwhile are read again from the cursor (keyed_state.py ``Admission.REWIND``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("llmpulse.worker")

STEP_S = 0.25  # how often the thread notes the time


class SessionFence:
    """In doubt from a stall longer than half ``session_s`` until a newer generation, or ``session_s`` passed."""

    def __init__(self, session_s: float, generation: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_s = session_s / 2
        self._hold_s = session_s
        self._generation = generation
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: float | None = None  # None until armed: the time before the worker starts is no stall
        self._doubt: tuple[float, int] | None = None  # (when the stall was seen, the generation held then)
        self.stalls = 0  # stalls seen so far
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self) -> None:
        """The process runs now: a gap since the last note longer than half the session starts a doubt."""
        now = self._clock()
        with self._lock:
            if self._seen is None:
                return
            gap, self._seen = now - self._seen, now
            if gap <= self._stall_s:
                return
            self._doubt = (now, self._generation())
            self.stalls += 1
        log.warning("this worker stood still for %.1f s, more than half its consumer session (%.0f s): the group "
                    "may have given its partitions to another worker, so it processes and writes nothing until the "
                    "group assigns partitions again, or for %.0f s if it does not", gap, self._hold_s, self._hold_s)

    def in_doubt(self) -> bool:
        self.note()  # the process may have run again before the thread did
        with self._lock:
            if self._doubt is None:
                return False
            since, generation = self._doubt
            if self._generation() > generation or self._clock() - since > self._hold_s:
                self._doubt = None
                return False
            return True

    def arm(self) -> None:
        """From now on a gap counts (``start`` arms it)."""
        with self._lock:
            self._seen = self._clock()

    def start(self) -> None:
        """Arm, and note the time every ``STEP_S`` in a thread of its own until ``stop``."""
        self.arm()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmpulse-session-fence", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(STEP_S):
            self.note()
