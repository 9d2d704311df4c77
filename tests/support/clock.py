"""A clock that moves only when the test moves it."""

from __future__ import annotations


class FakeClock:
    """Seconds, starting at ``start``. Pass the clock itself where code takes a ``clock()`` callable (breakers,
    the router), or the object where it takes ``now()``/``sleep()`` (the simulator): sleeping moves it on."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds
