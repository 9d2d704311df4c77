"""Alert lifecycle, pure: observations in, alert.v1 events out (firing -> acknowledged -> resolved).

Detectors report an ``Observation`` per rule and label set each time they evaluate: a severity while the
condition holds, ``None`` when it is clear. The policy turns that stream into few, meaningful events:

* Identity. ``fingerprint`` = hash of the rule and its sorted labels (labels must identify, e.g. service and
  model, never carry measured values). One incident per fingerprint at a time; its ``alert_id`` is
  ``<fingerprint>-<started_at_ms>``, deterministic so a replay produces the same ids.
* One ``firing`` event per incident, however many observations keep crossing.
* Escalation (e.g. WARNING -> CRITICAL) while firing or acknowledged emits one more ``firing`` event with the
  same alert_id, the new severity/priority, and the acknowledgement cleared: a worse state deserves fresh
  attention. De-escalation emits nothing; the incident keeps its worst severity until resolved.
* ``resolved`` once the condition has been reported clear for ``resolve_hold_ms`` (default 2 min) without
  turning active again in between (flapping does not resolve), or when no observation at all arrived for
  ``stale_ms`` (default 1 h; the source went quiet), checked by ``tick``.
* Cooldown: an incident that starts on the same fingerprint within ``cooldown_ms`` (15 min) of the last
  resolve is suppressed (no event) and counted in ``suppressed``.
* ``acknowledge`` moves a live incident to ``acknowledged`` once; repeating it returns the same event,
  unknown or resolved ids return None.

State is bounded: resolved incidents are dropped once their cooldown has passed, and at most ``max_incidents``
are kept (oldest resolved first, then least recently updated). Time is the callers' ``now_ms`` (event time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from llmpulse.processors.core.mitigations import mitigation_for

SEVERITIES: tuple[str, ...] = ("INFO", "WARNING", "ERROR", "CRITICAL")
SEVERITY_RANK: Mapping[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
DEFAULT_PRIORITIES: Mapping[str, str] = {"CRITICAL": "P0", "ERROR": "P1", "WARNING": "P2", "INFO": "P3"}
FIRING, ACKNOWLEDGED, RESOLVED = "firing", "acknowledged", "resolved"
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertConfig:
    cooldown_ms: int = 15 * MINUTE_MS
    resolve_hold_ms: int = 2 * MINUTE_MS
    stale_ms: int | None = 60 * MINUTE_MS
    max_incidents: int = 10_000
    priorities: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))


@dataclass(frozen=True, slots=True)
class Observation:
    """One evaluation of one rule for one label set; ``severity=None`` means the condition is clear."""

    rule: str
    labels: tuple[tuple[str, str], ...]
    severity: str | None
    observed: float
    threshold: float
    window: str
    summary: str
    now_ms: int
    # ``fingerprint(rule, labels)`` when the detector has it cached (series_index.py); computed here when empty
    fingerprint: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Fields of schemas/alert.v1.avsc; ``to_record()`` is ready for the Avro encoder."""

    alert_id: str
    fingerprint: str
    rule: str
    severity: str
    priority: str
    status: str
    service: str | None
    model: str | None
    provider: str | None
    summary: str
    observed: float
    threshold: float
    window: str
    started_at_ms: int
    updated_at_ms: int
    mitigation: str
    acknowledged_by: str | None
    labels: dict[str, str]

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "labels": dict(self.labels)}


def fingerprint(rule: str, labels: Iterable[tuple[str, str]]) -> str:
    """Stable id of (rule, label set): order of labels does not matter."""
    text = "\x1f".join([rule, *(f"{k}={v}" for k, v in sorted(labels))])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


@dataclass(slots=True)
class _Incident:
    alert_id: str
    fingerprint: str
    rule: str
    labels: tuple[tuple[str, str], ...]
    severity: str
    status: str
    started_at_ms: int
    updated_at_ms: int
    last_seen_ms: int  # the newest observation of it, active or clear (stale_ms runs from here)
    observed: float
    threshold: float
    window: str
    summary: str
    clear_since_ms: int | None = None  # reported clear since, without turning active again (resolve_hold_ms)
    acknowledged_by: str | None = None
    suppressed: int = 0  # starts on its fingerprint the cooldown kept silent


class AlertPolicy:
    """Deduplicates, escalates, resolves and cools down alerts; see the module docstring."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self._incidents: dict[str, _Incident] = {}  # by fingerprint
        self._ids: dict[str, str] = {}  # alert_id -> fingerprint
        self._open: set[str] = set()  # fingerprints of firing or acknowledged incidents
        self._resolved: set[str] = set()  # fingerprints of resolved incidents (the only ones a cooldown expires)
        self._open_rules: dict[tuple[tuple[str, str], ...], frozenset[str]] = {}  # kept with _open (_set_open)
        # each incident's JSON as to_bytes writes it, dropped when the incident may have changed: a partition with
        # thousands of open incidents re-encodes only the few a record touched
        self._encoded: dict[str, bytes] = {}
        self.suppressed: dict[str, int] = {}  # rule -> incidents not fired because of the cooldown

    def observe(self, obs: Observation) -> list[AlertEvent]:
        """Apply one observation; returns the events it causes (zero or one)."""
        if obs.severity is not None and obs.severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {obs.severity!r}")
        fp = obs.fingerprint or fingerprint(obs.rule, obs.labels)
        incident = self._incidents.get(fp)
        self._encoded.pop(fp, None)
        if obs.severity is None:
            return self._clear(incident, obs) if incident else []
        if incident is None or (
            incident.status == RESOLVED and obs.now_ms - incident.updated_at_ms >= self.config.cooldown_ms
        ):
            return [self._start(fp, obs)]
        if incident.status == RESOLVED:
            incident.suppressed += 1
            self.suppressed[obs.rule] = self.suppressed.get(obs.rule, 0) + 1
            return []
        return self._still_active(incident, obs)

    def observe_many(self, observations: Iterable[Observation]) -> list[AlertEvent]:
        return [event for obs in observations for event in self.observe(obs)]

    def open_rules(self) -> Mapping[tuple[tuple[str, str], ...], frozenset[str]]:
        """Sorted label set -> rules with a firing or acknowledged incident on it. A clear observation changes
        only such incidents, so a detector may skip the clear ones of every other (rule, labels). A live view: kept
        up to date as incidents open and close, never rebuilt."""
        return MappingProxyType(self._open_rules)

    def _set_open(self, incident: _Incident, is_open: bool) -> None:
        fp = incident.fingerprint
        if (fp in self._open) == is_open:
            return
        rules = self._open_rules.get(incident.labels, frozenset())
        if is_open:
            self._open.add(fp)
            rules |= {incident.rule}
        else:
            self._open.discard(fp)
            rules -= {incident.rule}
        if rules:
            self._open_rules[incident.labels] = rules
        else:
            self._open_rules.pop(incident.labels, None)

    def tick(self, now_ms: int) -> list[AlertEvent]:
        """Resolve incidents clear for the hold time or silent past ``stale_ms``; evict expired ones."""
        out = []
        for incident in list(self._incidents.values()):
            if incident.status == RESOLVED:
                continue
            clear_for = None if incident.clear_since_ms is None else now_ms - incident.clear_since_ms
            stale = (
                self.config.stale_ms is not None and now_ms - incident.last_seen_ms >= self.config.stale_ms
            )
            if (clear_for is not None and clear_for >= self.config.resolve_hold_ms) or stale:
                if stale and incident.clear_since_ms is None:
                    incident.summary = (
                        f"no data for {(now_ms - incident.last_seen_ms) // MINUTE_MS} min: "
                        + (incident.summary)
                    )
                out.append(self._resolve(incident, now_ms))
        self._evict(now_ms)
        return out

    def acknowledge(self, alert_id: str, actor: str, now_ms: int) -> AlertEvent | None:
        """Acknowledge a live incident; idempotent (same event again); None for unknown or resolved ids."""
        fp = self._ids.get(alert_id)
        incident = self._incidents.get(fp) if fp else None
        if incident is None or incident.alert_id != alert_id or incident.status == RESOLVED:
            return None
        if incident.status == FIRING:
            incident.status = ACKNOWLEDGED
            incident.acknowledged_by = actor
            incident.updated_at_ms = max(incident.updated_at_ms, now_ms)  # see _resolve
            self._encoded.pop(incident.fingerprint, None)
        return self._event(incident)

    def active(self) -> list[AlertEvent]:
        """Firing and acknowledged incidents, most urgent first (for GET /api/alerts)."""
        live = [i for i in self._incidents.values() if i.status != RESOLVED]
        live.sort(key=lambda i: (-SEVERITY_RANK[i.severity], i.started_at_ms))
        return [self._event(i) for i in live]

    def get(self, alert_id: str) -> AlertEvent | None:
        fp = self._ids.get(alert_id)
        incident = self._incidents.get(fp) if fp else None
        return self._event(incident) if incident and incident.alert_id == alert_id else None

    def to_dict(self) -> dict[str, Any]:
        return {"incidents": [_incident_dict(i) for i in self._incidents.values()], "suppressed": dict(self.suppressed)}

    def to_bytes(self) -> bytes:
        """Compact JSON of ``to_dict()`` (the KeyedState ``Serializable`` protocol), byte for byte; incidents
        unchanged since the last call are not encoded again."""
        encoded = self._encoded
        parts = []
        for fp, incident in self._incidents.items():
            blob = encoded.get(fp)
            if blob is None:
                blob = encoded[fp] = json.dumps(_incident_dict(incident), separators=(",", ":")).encode("utf-8")
            parts.append(blob)
        suppressed = json.dumps(dict(self.suppressed), separators=(",", ":")).encode("utf-8")
        return b'{"incidents":[' + b",".join(parts) + b'],"suppressed":' + suppressed + b"}"

    @classmethod
    def from_bytes(cls, blob: bytes, config: AlertConfig | None = None) -> AlertPolicy:
        return cls.from_dict(json.loads(blob), config)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: AlertConfig | None = None) -> AlertPolicy:
        policy = cls(config)
        for raw in data.get("incidents", []):
            incident = _Incident(**{**raw, "labels": tuple((str(k), str(v)) for k, v in raw["labels"])})
            policy._incidents[incident.fingerprint] = incident
            policy._ids[incident.alert_id] = incident.fingerprint
            policy._set_open(incident, incident.status != RESOLVED)
            if incident.status == RESOLVED:
                policy._resolved.add(incident.fingerprint)
        policy.suppressed = {str(k): int(v) for k, v in data.get("suppressed", {}).items()}
        return policy

    # -- transitions ---------------------------------------------------------------------------------------

    def _start(self, fp: str, obs: Observation) -> AlertEvent:
        old = self._incidents.pop(fp, None)
        if old is not None:
            self._ids.pop(old.alert_id, None)
            self._set_open(old, False)
            self._resolved.discard(fp)
        incident = _Incident(
            alert_id=f"{fp}-{obs.now_ms}",
            fingerprint=fp,
            rule=obs.rule,
            labels=tuple(sorted(obs.labels)),
            severity=str(obs.severity),
            status=FIRING,
            started_at_ms=obs.now_ms,
            updated_at_ms=obs.now_ms,
            last_seen_ms=obs.now_ms,
            observed=obs.observed,
            threshold=obs.threshold,
            window=obs.window,
            summary=obs.summary,
        )
        self._incidents[fp] = incident
        self._ids[incident.alert_id] = fp
        self._set_open(incident, True)
        self._evict(obs.now_ms)
        return self._event(incident)

    def _still_active(self, incident: _Incident, obs: Observation) -> list[AlertEvent]:
        incident.clear_since_ms = None  # flapping back to active restarts the resolve hold
        incident.last_seen_ms = obs.now_ms
        self._take_values(incident, obs)  # latest figures, shown by active() and the next event
        if SEVERITY_RANK[str(obs.severity)] <= SEVERITY_RANK[incident.severity]:
            return []
        incident.severity = str(obs.severity)
        incident.status = FIRING
        incident.acknowledged_by = None
        incident.updated_at_ms = max(incident.updated_at_ms, obs.now_ms)  # see _resolve
        return [self._event(incident)]

    def _clear(self, incident: _Incident, obs: Observation) -> list[AlertEvent]:
        if incident.status == RESOLVED:
            return []
        incident.last_seen_ms = obs.now_ms
        if incident.clear_since_ms is None:
            incident.clear_since_ms = obs.now_ms
        if obs.now_ms - incident.clear_since_ms < self.config.resolve_hold_ms:
            return []
        self._take_values(incident, obs)
        return [self._resolve(incident, obs.now_ms)]

    def _resolve(self, incident: _Incident, now_ms: int) -> AlertEvent:
        incident.status = RESOLVED
        # An alert's events never go back in time: the timer decides on the wall clock, calls on their event time,
        # which lags it while a worker catches up; a resolve stamped before the timer's escalation would read as
        # older to the incidents (IncidentManager keeps an alert's newest event) and its incident never resolve.
        incident.updated_at_ms = max(incident.updated_at_ms, now_ms)
        incident.clear_since_ms = None
        self._set_open(incident, False)
        self._resolved.add(incident.fingerprint)
        self._encoded.pop(incident.fingerprint, None)
        return self._event(incident)

    @staticmethod
    def _take_values(incident: _Incident, obs: Observation) -> None:
        incident.observed = obs.observed
        incident.threshold = obs.threshold
        incident.window = obs.window
        if obs.summary:
            incident.summary = obs.summary

    def _evict(self, now_ms: int) -> None:
        cooldown, incidents = self.config.cooldown_ms, self._incidents
        expired = {fp for fp in self._resolved if now_ms - incidents[fp].updated_at_ms >= cooldown}
        excess = len(self._incidents) - len(expired) - self.config.max_incidents
        if excess > 0:
            rest = sorted(
                (i for fp, i in self._incidents.items() if fp not in expired),
                key=lambda i: (i.status != RESOLVED, i.updated_at_ms),
            )
            expired.update(i.fingerprint for i in rest[:excess])
        for fp in expired:
            incident = self._incidents.pop(fp)
            self._ids.pop(incident.alert_id, None)
            self._set_open(incident, False)
            self._resolved.discard(fp)
            self._encoded.pop(fp, None)

    def _event(self, incident: _Incident) -> AlertEvent:
        labels = dict(incident.labels)
        return AlertEvent(
            alert_id=incident.alert_id,
            fingerprint=incident.fingerprint,
            rule=incident.rule,
            severity=incident.severity,
            priority=self.config.priorities.get(incident.severity, "P3"),
            status=incident.status,
            service=labels.get("service"),
            model=labels.get("model"),
            provider=labels.get("provider"),
            summary=incident.summary,
            observed=float(incident.observed),
            threshold=float(incident.threshold),
            window=incident.window,
            started_at_ms=incident.started_at_ms,
            updated_at_ms=incident.updated_at_ms,
            mitigation=mitigation_for(incident.rule, labels),
            acknowledged_by=incident.acknowledged_by,
            labels=labels,
        )


_INCIDENT_FIELDS = tuple(f.name for f in fields(_Incident))


def _incident_dict(incident: _Incident) -> dict[str, Any]:
    """``asdict`` of an incident, labels as lists, without asdict's deep copies (its fields are plain values)."""
    out = {name: getattr(incident, name) for name in _INCIDENT_FIELDS}
    out["labels"] = [list(kv) for kv in incident.labels]
    return out
