"""The input guard before the call: the worker's injection detectors run on the prompt in the SDK.

``guard="observe"`` scores every prompt and counts the flagged ones; ``guard="block"`` also raises
:class:`PromptBlocked` (reason, score) before the request is sent. The detectors are the worker's own
(``processors/core/guards``: the regex patterns plus the learned classifier, the shipped model, the worker's
threshold), so the SDK and the worker agree on what an injection is. Only the verdict is kept: no prompt text
leaves the process through the guard (text is sent only with ``LLMPULSE_SDK_CAPTURE_TEXT=1``, as before).

The detectors need numpy, which the SDK's base install does not have: enabling the guard without it raises an
ImportError naming the extra (``pip install 'llmpulse[guard]'``) when the Pulse is created. ``off`` imports
nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

GUARD_MODES = ("off", "observe", "block")


class PromptBlocked(Exception):
    """Raised by the instrumented clients with ``guard="block"`` before any request is sent: the prompt was
    judged a prompt injection. ``reason`` names the detector (``injection``), ``score`` is in [0, 1]."""

    def __init__(self, reason: str, score: float, patterns: tuple[str, ...] = ()) -> None:
        super().__init__(f"llmpulse: prompt blocked, {reason} (score {score:.2f})")
        self.reason = reason
        self.score = score
        self.patterns = patterns


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool  # the score reached the worker's threshold
    reason: str  # the detector that flagged it ("injection"); empty when not flagged
    score: float  # in [0, 1]
    patterns: tuple[str, ...] = ()  # names of the injection patterns that matched, when flagged


CLEAN = Verdict(False, "", 0.0)


class PromptGuard:
    """Injection verdicts on single prompts with the worker's detectors; thread-safe."""

    def __init__(self, mode: str, scan_chars: int | None = None) -> None:
        if mode not in GUARD_MODES:
            raise ValueError(f"guard mode {mode!r} is not one of {', '.join(GUARD_MODES)}")
        self.mode = mode
        self._detector: Any = None
        self._window: Any = None
        self._lock = threading.Lock()
        self.checked = 0
        self.flagged = 0
        if mode != "off":
            self._load(scan_chars)

    def _load(self, scan_chars: int | None) -> None:
        try:
            from llmpulse.processors.core.guards.guard import GuardConfig
            from llmpulse.processors.core.guards.injection import InjectionDetector
            from llmpulse.processors.loaders import read_injection_model
        except ImportError as exc:
            raise ImportError("llmpulse's prompt guard runs the worker's detectors, which need numpy: "
                              "pip install 'llmpulse[guard]'") from exc
        config = GuardConfig()
        self.threshold = config.injection_threshold
        self.scan_chars = scan_chars or config.scan_chars
        self._detector = InjectionDetector(read_injection_model())
        self._window = window

    def check(self, prompt: str | None) -> Verdict:
        """The verdict on one prompt (CLEAN when the guard is off or there is no text)."""
        if self._detector is None or not prompt:
            return CLEAN
        score, names = self._detector.score_one(self._window(prompt, self.scan_chars))
        self.checked += 1
        if score < self.threshold:
            return Verdict(False, "", score)
        self.flagged += 1
        return Verdict(True, "injection", score, tuple(names))


def window(text: str, limit: int) -> str:
    """The part of a long prompt the worker's detectors read: its first 3/4 and last 1/4 (GuardConfig.scan_chars)."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return text[:head] + "\n" + text[len(text) - (limit - head) :]
