"""Runs the text guard over the calls of a batch that carry text, and escalates repeat attackers.

Calls without text cost one vectorised test. The SDK redacts PII before sending by default, so a
``[REDACTED_<KIND>]`` marker counts as PII found: the text did carry it. Per-user escalation: a user
with ``incident_attempts`` injection attempts inside ``incident_window_s`` is a CRITICAL security incident, over
once the user has been quiet for ``incident_quiet_s``.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.guards.classifier import InjectionClassifier
from llmpulse.processors.core.guards.guard import GuardConfig, TextGuard
from llmpulse.processors.core.guards.hallucination import LEVELS

_REDACTED = re.compile(r"\[REDACTED_([A-Z0-9_]+)\]")
_MARKER = "[REDACTED_"


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardMonitorConfig:
    guard: GuardConfig = field(default_factory=GuardConfig)
    incident_attempts: int = 3
    incident_window_s: int = 600
    # The campaign is over (its incident clears) once the user's last attempt is this old, though the window
    # still counts the earlier ones; attempts within it keep one incident open across pauses.
    incident_quiet_s: int = 60
    max_tracked_users: int = 10_000


@dataclass(slots=True)
class GuardVerdicts:
    """Per call flags for the batch (all False where there was no text) plus counts for the exporter."""

    injection: np.ndarray
    hallucination: np.ndarray
    pii: np.ndarray
    toxic: np.ndarray
    injection_by_severity: dict[str, int]
    pii_by_kind: dict[str, int]
    hallucination_by_level: dict[str, int]
    checked: int


class AttemptLog:
    """Recent injection attempts per user (bounded); persisted as JSON."""

    def __init__(self, attempts: dict[str, list[int]] | None = None, reported: dict[str, int] | None = None) -> None:
        self.attempts: dict[str, deque[int]] = {u: deque(ts) for u, ts in (attempts or {}).items()}
        self.reported = reported or {}

    def to_bytes(self) -> bytes:
        data = {"attempts": {u: list(ts) for u, ts in self.attempts.items()}, "reported": self.reported}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> AttemptLog:
        data = json.loads(blob)
        return cls(data.get("attempts"), data.get("reported"))


def _counts(values: np.ndarray) -> dict[str, int]:
    """How often each value occurs (keys in sorted order), for the verdict's per-kind counts."""
    names, counts = np.unique(values, return_counts=True)
    return dict(zip(map(str, names.tolist()), counts.tolist(), strict=True))


class GuardMonitor:
    """``classifier``: the injection model ``TextGuard`` scores prompts with (None: regex patterns only)."""

    def __init__(self, config: GuardMonitorConfig, classifier: InjectionClassifier | None = None) -> None:
        self.config = config
        self.guard = TextGuard(config.guard, classifier)

    def check(self, calls: CallColumns) -> GuardVerdicts:
        n = len(calls)
        has_text = (calls.prompt_text != None) | (calls.response_text != None)  # noqa: E711
        flags = {name: np.zeros(n, dtype=bool) for name in ("injection", "hallucination", "pii", "toxic")}
        verdicts = GuardVerdicts(**flags, injection_by_severity={}, pii_by_kind={}, hallucination_by_level={},
                                 checked=int(has_text.sum()))
        if not has_text.any():
            return verdicts
        rows = np.flatnonzero(has_text)
        result = self.guard.check_batch(calls.prompt_text[rows], calls.response_text[rows])
        verdicts.injection[rows] = result.injection
        verdicts.hallucination[rows] = result.hallucination_risk
        verdicts.toxic[rows] = result.toxic
        # Only rows with PII found or a redaction marker take a Python step (they are few).
        marked = {i for i, text in enumerate(calls.prompt_text[rows].tolist()) if text and _MARKER in text}
        marked |= {i for i, text in enumerate(calls.response_text[rows].tolist()) if text and _MARKER in text}
        for i in sorted(marked | {i for i, found in enumerate(result.pii) if found}):
            row = int(rows[i])
            kinds = set(result.pii[i]) | self._redacted_kinds(calls, row)
            if kinds:
                verdicts.pii[row] = True
                for kind in kinds:
                    verdicts.pii_by_kind[kind] = verdicts.pii_by_kind.get(kind, 0) + 1
        score = result.injection_score[result.injection]
        severities = np.where(score >= 0.9, "high", np.where(score >= 0.7, "medium", "low"))
        verdicts.injection_by_severity.update(_counts(severities))
        levels = np.asarray(result.hallucination_level)[result.hallucination_risk].astype(np.int64)
        verdicts.hallucination_by_level.update(_counts(np.asarray(LEVELS, dtype=object)[levels]))
        return verdicts

    @staticmethod
    def _redacted_kinds(calls: CallColumns, row: int) -> set[str]:
        kinds = set()
        for text in (calls.prompt_text[row], calls.response_text[row]):
            if text and _MARKER in text:
                kinds.update(kind.lower() for kind in _REDACTED.findall(text))
        return kinds

    def record_attempts(self, log: AttemptLog, calls: CallColumns, injection: np.ndarray) -> None:
        """Remember this batch's injection attempts per user (bounded per user and in users)."""
        c = self.config
        for row in np.flatnonzero(injection).tolist():
            user = calls.user_hash[row] or "anonymous"
            times = log.attempts.setdefault(user, deque(maxlen=max(c.incident_attempts * 4, 16)))
            times.append(int(calls.timestamp_ms[row]))
        while len(log.attempts) > c.max_tracked_users:
            log.attempts.pop(next(iter(log.attempts)))

    def escalate(self, log: AttemptLog, now_ms: int) -> list[Observation]:
        """Per-user incident observations: active while a user is over the threshold inside the window,
        clear once a previously reported user falls below it (so the incident can resolve)."""
        c = self.config
        horizon = now_ms - c.incident_window_s * 1000
        window = f"{c.incident_window_s // 60}m"
        out = []
        for user, times in list(log.attempts.items()):
            while times and times[0] < horizon:
                times.popleft()
            if not times:
                del log.attempts[user]
        for user in set(log.attempts) | set(log.reported):
            times = log.attempts.get(user, deque())
            attempts = len(times)
            over = attempts >= c.incident_attempts and now_ms - times[-1] <= c.incident_quiet_s * 1000
            if not over and user not in log.reported:
                continue
            if over:
                log.reported[user] = now_ms
            else:
                del log.reported[user]
            out.append(Observation(
                "security_incident", (("type", "prompt_injection_campaign"), ("user", user)),
                "CRITICAL" if over else None, float(attempts), float(c.incident_attempts), window,
                f"user {user} made {attempts} prompt-injection attempts in {c.incident_window_s // 60} min",
                now_ms,
            ))
        return out
