"""A stand-in for :class:`llmpulse.producers.Pulse` on the recording side only."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class RecordingPulse:
    """Keeps each ``record(**fields)`` as a dict; ``settings.capture_text`` is what instrumented clients read."""

    def __init__(self, capture_text: bool = False) -> None:
        self.settings = SimpleNamespace(capture_text=capture_text)
        self.calls: list[dict[str, Any]] = []

    def record(self, **fields: Any) -> bool:
        self.calls.append(fields)
        return True

    def only(self) -> dict[str, Any]:
        assert len(self.calls) == 1, f"expected one recorded call, got {len(self.calls)}: {self.calls}"
        return self.calls[0]
