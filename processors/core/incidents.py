"""Incidents, pure: member alerts that fire close together and share a likely cause become one incident.

Input: alert events (``AlertEvent.to_record()`` dicts) from every partition engine and from the fleet engine.
Output: incident events (schemas/incident.v1.avsc). On-call pages on incident events; members are detail.

* Grouping. A member that starts firing joins a live incident of the same *cause family* (availability:
  latency, errors, circuits; spend and budgets; drift; injection; PII; output quality; experiments) when the
  incident's scope already covers it, or when the incident's newest member started within
  ``group_window_ms`` of it (the incident then widens). It also joins a live incident of another family that
  holds a member of its own family on its series, however long ago that started (a runaway's incident takes the
  later budget crossings of the service it ran on). Across families, a member joins an incident that
  already has a member on its series (or, for a service or model budget, in its service or model) within
  ``group_window_ms``: one series misbehaving on several fronts at once (slow, expensive and over budget) is
  one cause. A symptom (drift) joins its series' incident of another family whenever it starts, while that
  incident is live or within ``cooldown_ms`` of its resolve (then as detail only, without reopening it).
  Among several candidates the one that covers it wins, then the newest. Otherwise the member opens an
  incident of its own.
* Scope, the likely cause: the narrowest that covers every member, tried in this order: one series
  (service, model, provider); one service across models; one model across services; one provider across
  models and services; else the fleet.
* Group wait: like Alertmanager's ``group_wait``, an incident below CRITICAL is announced (``opened``, the
  first page) once its worst severity has held for ``group_wait_ms`` of event time, and at the latest
  ``max_group_wait_ms`` after its first member started; a CRITICAL one at once (nothing worse can follow).
  A rate that climbs through its warning level into its critical one, or a circuit that opens before the
  error rate turns critical, then pages once, at the level it reached. Detection is the incident's start
  (``started_at_ms``, its first member); the page follows by the group wait.
* INFO members (priority P3) group among themselves, never with paging members: informational events
  cannot widen or hide an incident that pages.
* Lifecycle: ``opened`` -> ``escalated`` (its worst severity rises; an acknowledgement is cleared) ->
  ``acknowledged`` -> ``resolved`` once every member has resolved; members of a symptom family (drift) that
  joined an incident with a cause do not hold it open, and their later updates change nothing. ``updated``
  events record membership and figures and never page. A member of the same family starting within
  ``cooldown_ms`` of the resolve, inside the incident's scope or within ``group_window_ms`` of its newest
  member, reopens it (``updated``, or ``escalated`` if worse), so a flapping cause pages once even while it
  moves from one service to the next.
  Incidents whose worst severity is INFO (priority P3) never page, nor do those of a quiet family
  (``QUIET_FAMILIES`` in cause_families.py: distribution drift), which take the informational priority
  whatever their severity.
* Pages (``paging`` on the event): the first announcement at P0-P2; one escalation into the urgent tier
  (``urgent_priorities``, P0/P1: someone is woken) from a P2 page; the resolve of an incident that paged.
  An escalation within the urgent tier (P1 -> P0) is an ``escalated`` event that does not page again: the
  on-call is already engaged.
* Exactly-once by idempotence: a member event is applied only when it is newer than what is known of that
  member (``updated_at_ms``, then firing < acknowledged < resolved), so an event applied twice, or an old one
  after a new one, changes nothing. The incident id derives from its first member's alert id (itself
  deterministic), so a replay after a crash repeats the id and never opens a second incident.

Events coalesce per ``apply`` call: one event per incident and call, carrying its state after the call.
Time is event time: members' ``started_at_ms``/``updated_at_ms`` and the caller's ``now_ms`` for ``tick``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from typing import Any

from llmpulse.processors.core.alert_policy import (
    ACKNOWLEDGED,
    DEFAULT_PRIORITIES,
    FIRING,
    MINUTE_MS,
    RESOLVED,
    SEVERITIES,
    SEVERITY_RANK,
)
from llmpulse.processors.core.cause_families import family_of, informational, quiet, symptom_family
from llmpulse.processors.core.incident_members import Member, same_series
from llmpulse.processors.core.mitigations import mitigation_for

OPENED, ESCALATED, UPDATED = "opened", "escalated", "updated"
SCOPES = ("series", "service", "model", "provider", "fleet")


def _symptom(member: Member) -> bool:
    return _symptom_rule(member.rule)


@cache
def _symptom_rule(rule: str) -> bool:
    return symptom_family(family_of(rule))


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentConfig:
    group_wait_ms: int = 60_000
    max_group_wait_ms: int = 180_000
    group_window_ms: int = 5 * MINUTE_MS
    cooldown_ms: int = 10 * MINUTE_MS
    stale_ms: int = 3 * 60 * MINUTE_MS  # no member news for this long: resolve (members resolve stale at 1 h)
    urgent_priorities: tuple[str, ...] = ("P0", "P1")  # one urgent page is enough: P1 -> P0 does not re-page
    max_incidents: int = 2_000
    max_members_listed: int = 50
    priorities: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """Fields of schemas/incident.v1.avsc; ``to_record()`` is ready for the Avro encoder."""

    incident_id: str
    status: str
    paging: bool
    scope: str
    scope_key: str
    severity: str
    priority: str
    summary: str
    rules: list[str]
    services: list[str]
    models: list[str]
    providers: list[str]
    members: list[dict[str, Any]]
    member_count: int
    mitigation: str
    started_at_ms: int
    updated_at_ms: int
    resolved_at_ms: int | None
    acknowledged_by: str | None
    labels: dict[str, str]

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def member_ids(self) -> list[str]:
        return [m["alert_id"] for m in self.members]


@dataclass(slots=True)
class _Incident:
    incident_id: str
    family: str
    status: str
    severity: str
    started_at_ms: int
    updated_at_ms: int
    last_member_start_ms: int
    resolved_at_ms: int | None = None
    acknowledged_by: str | None = None
    announced: bool = False
    severity_since_ms: int = 0  # event time the worst severity was reached (the group wait restarts there)
    paged: bool = False  # an event of this incident paged
    paged_urgent: bool = False  # ... at an urgent priority (P0/P1): later escalations are updates
    members: dict[str, Member] = field(default_factory=dict)  # change it through ``add`` and ``drop``
    # Kept for reading, never persisted: the members' services, models and providers, and scope(). A member's
    # series never changes, so only joining (added to the sets) and leaving (both read again) move them.
    _series_values: tuple[set[str | None], ...] | None = field(default=None, init=False, repr=False, compare=False)
    _scope: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def add(self, member: Member) -> None:
        self.members[member.alert_id] = member
        if self._series_values is not None:
            for values, value in zip(self._series_values, member.series, strict=True):
                values.add(value)
        self._scope = None

    def drop(self, alert_id: str) -> None:
        self.members.pop(alert_id, None)
        self._series_values = self._scope = None

    def scope(self) -> tuple[str, str]:
        if self._scope is None:
            self._scope = self._narrowest_scope()
        return self._scope

    def _narrowest_scope(self) -> tuple[str, str]:
        if self._series_values is None:
            self._series_values = tuple({m.series[part] for m in self.members.values()} for part in range(3))
        services, models, providers = self._series_values
        if None not in services | models and len(services) == len(models) == 1 and len(providers) == 1:
            service, model, provider = (next(iter(values)) for values in self._series_values)
            return "series", "/".join(v for v in (service, model, provider) if v)
        for scope, values in (("service", services), ("model", models), ("provider", providers)):
            if len(values) == 1 and None not in values:
                return scope, str(next(iter(values)))
        return "fleet", "fleet"

    def covers(self, member: Member) -> bool:
        scope, key = self.scope()
        if scope == "fleet":
            return True
        if scope == "series":
            return "/".join(v for v in member.series if v) == key
        return getattr(member, scope) == key

    def causes_resolved(self) -> bool:
        """Every member of a cause family has resolved (every member, in an incident of symptoms alone); stops at
        the first live cause, so a live incident of thousands of members is not read whole on every event."""
        any_cause = False
        for member in self.members.values():
            if not _symptom(member):
                if member.status != RESOLVED:
                    return False
                any_cause = True
        return any_cause or all(member.status == RESOLVED for member in self.members.values())

    def to_dict(self) -> dict[str, Any]:
        """The persisted fields (every one but the scope kept for reading), members last, as ``asdict`` orders them."""
        return {**{name: getattr(self, name) for name in _PERSISTED},
                "members": [member.to_dict() for member in self.members.values()]}

    def worst(self) -> list[Member]:
        """Members, most severe first, then the earliest."""
        return sorted(self.members.values(),
                      key=lambda m: (-SEVERITY_RANK.get(m.severity, 0), m.started_at_ms, m.alert_id))


_PERSISTED = tuple(f.name for f in fields(_Incident) if f.name != "members" and not f.name.startswith("_"))


class IncidentManager:
    """Groups member alerts into incidents; see the module docstring."""

    def __init__(self, config: IncidentConfig | None = None) -> None:
        self.config = config or IncidentConfig()
        self._incidents: dict[str, _Incident] = {}
        self._member_of: dict[str, str] = {}  # alert_id -> incident_id
        self._clock_ms = 0  # the newest event time seen: drives the group wait between ticks

    # ---- input -------------------------------------------------------------------------------------------
    def apply(self, records: Iterable[Mapping[str, Any]]) -> list[IncidentEvent]:
        """Merge member alert events; returns at most one event per incident they changed. Most fleet summaries
        carry no alert events: without one, the clock stands still and nothing can change."""
        changes: dict[str, set[str]] = {}
        applied = False
        for record in records:
            applied = True
            self._clock_ms = max(self._clock_ms, int(record["updated_at_ms"]))
            incident_id, change = self._apply_one(record)
            if incident_id is not None and change is not None:
                changes.setdefault(incident_id, set()).add(change)
        return self._events(changes) if applied else []

    def _events(self, changes: dict[str, set[str]]) -> list[IncidentEvent]:
        """Announce what waited long enough, then one event per announced incident that changed."""
        for incident in self._incidents.values():  # one resolved within its group wait never pages at all
            if not incident.announced and incident.status != RESOLVED and self._waited(incident):
                incident.announced = True
                changes.setdefault(incident.incident_id, set()).add(OPENED)
        out = []
        for incident_id, kinds in changes.items():
            incident = self._incidents.get(incident_id)
            if incident is not None and incident.announced:
                kind = _strongest(kinds)
                out.append(self._event(incident, kind, paging=self._pages(incident, kind)))
        return out

    def _priority(self, incident: _Incident) -> str:
        info_priority = self.config.priorities.get("INFO", "P3")
        return info_priority if quiet(incident.family) else self.config.priorities.get(incident.severity, "P3")

    def _pages(self, incident: _Incident, kind: str) -> bool:
        """Whether this event pages, and remember what was paged: the first event at P0-P2, an escalation
        into the urgent tier (P2 -> P1/P0) once, and the resolve of an incident that paged."""
        priority = self._priority(incident)
        if kind == RESOLVED:
            return incident.paged
        if kind not in (OPENED, ESCALATED) or priority == self.config.priorities.get("INFO", "P3"):
            return False
        urgent = priority in self.config.urgent_priorities
        if incident.paged and (incident.paged_urgent or not urgent):
            return False
        incident.paged, incident.paged_urgent = True, urgent
        return True

    def _apply_one(self, record: Mapping[str, Any]) -> tuple[str | None, str | None]:
        alert_id = str(record["alert_id"])
        incident_id = self._member_of.get(alert_id)
        incident = self._incidents.get(incident_id) if incident_id else None
        if incident is not None:
            member = incident.members[alert_id]
            if not member.is_newer(record):
                return None, None
            if informational(incident.family) and str(record["severity"]) != "INFO" \
                    and str(record["status"]) != RESOLVED:
                self._leave(incident, alert_id)  # an informational member turned paging: it has another home
                return self._apply_one(record)
            member.take(record)
            return incident.incident_id, self._reassess(incident, member)
        if str(record["status"]) == RESOLVED:
            return None, None  # a member we never saw firing (before incidents existed, or evicted)
        member = Member.of(record)
        incident = self._home_for(member)
        if incident is None:
            incident = self._open(member)
            return incident.incident_id, OPENED
        incident.add(member)
        self._member_of[member.alert_id] = incident.incident_id
        incident.last_member_start_ms = max(incident.last_member_start_ms, member.started_at_ms)
        if incident.status == RESOLVED:
            if _symptom(member) and not symptom_family(incident.family):
                return incident.incident_id, None  # a late symptom of a cause that has cleared: detail only
            incident.status, incident.resolved_at_ms = FIRING, None
        return incident.incident_id, self._reassess(incident, member)

    def _leave(self, incident: _Incident, alert_id: str) -> None:
        """Take a member out of an informational incident (which never paged); drop the incident once empty."""
        incident.drop(alert_id)
        self._member_of.pop(alert_id, None)
        if not incident.members:
            self._incidents.pop(incident.incident_id, None)

    def _home_for(self, member: Member) -> _Incident | None:
        family = family_of(member.rule, member.severity)
        window = self.config.group_window_ms
        best: tuple[bool, int] | None = None
        chosen = None
        for incident in self._incidents.values():
            recent = member.started_at_ms - incident.last_member_start_ms <= window
            if incident.family != family and _holds_on_series(incident, member, family):
                if incident.status == RESOLVED:
                    continue
                covers = True  # its family is there already, on its series: however long ago that started
            elif incident.family != family:
                if informational(family) or informational(incident.family) or not _shares_series(incident, member):
                    continue
                if quiet(incident.family) and not quiet(family):
                    continue  # a cause pages from an incident of its own
                if _symptom(member):  # drift follows its cause by minutes: it joins while the cause is live or cools
                    if incident.status == RESOLVED and member.started_at_ms - (
                            incident.resolved_at_ms or incident.updated_at_ms) > self.config.cooldown_ms:
                        continue
                elif not (recent and incident.status != RESOLVED):
                    continue
                covers = True
            else:
                covers = incident.covers(member)
                if incident.status == RESOLVED:
                    resolved_at = incident.resolved_at_ms or incident.updated_at_ms
                    if not (covers or recent) or member.started_at_ms - resolved_at > self.config.cooldown_ms:
                        continue
                elif not covers and not recent:
                    continue
            rank = (covers, incident.last_member_start_ms)
            if best is None or rank > best:
                best, chosen = rank, incident
        return chosen

    def _waited(self, incident: _Incident) -> bool:
        if incident.severity == SEVERITIES[-1]:
            return True
        steady_since = max(incident.started_at_ms, incident.severity_since_ms)
        return (self._clock_ms - steady_since >= self.config.group_wait_ms
                or self._clock_ms - incident.started_at_ms >= self.config.max_group_wait_ms)

    def _open(self, member: Member) -> _Incident:
        seed = member.alert_id
        while f"inc-{hashlib.sha256(seed.encode()).hexdigest()[:20]}" in self._incidents:
            seed += "/again"  # its informational incident still holds the first id (deterministic on replay)
        incident = _Incident(
            incident_id=f"inc-{hashlib.sha256(seed.encode()).hexdigest()[:20]}",
            family=family_of(member.rule, member.severity), status=FIRING,
            severity=member.severity,
            started_at_ms=member.started_at_ms, updated_at_ms=member.updated_at_ms,
            last_member_start_ms=member.started_at_ms, members={member.alert_id: member},
        )
        self._incidents[incident.incident_id] = incident
        self._member_of[member.alert_id] = incident.incident_id
        self._evict(member.updated_at_ms)
        return incident

    def _reassess(self, incident: _Incident, member: Member) -> str | None:
        """After a member changed: escalate, resolve or just update (before its announcement, silently)."""
        if incident.status == RESOLVED and _symptom(member):
            return None  # a symptom that lingers after its cause changes nothing on-call sees
        incident.updated_at_ms = max(incident.updated_at_ms, member.updated_at_ms)
        if member.status != RESOLVED and SEVERITY_RANK.get(member.severity, 0) > SEVERITY_RANK[incident.severity]:
            incident.severity = member.severity
            incident.severity_since_ms = member.updated_at_ms
            incident.status = FIRING
            incident.acknowledged_by = None
            return ESCALATED if incident.announced else UPDATED
        if incident.status != RESOLVED and incident.causes_resolved():
            incident.status = RESOLVED
            incident.resolved_at_ms = incident.updated_at_ms
            return RESOLVED
        return UPDATED

    # ---- operator and timer ---------------------------------------------------------------------------------
    def acknowledge(self, incident_id: str, actor: str, now_ms: int) -> IncidentEvent | None:
        """Acknowledge a live incident; idempotent (the same event again); None for unknown or resolved ids."""
        incident = self._incidents.get(incident_id)
        if incident is None or incident.status == RESOLVED:
            return None
        if incident.status == FIRING:
            incident.status = ACKNOWLEDGED
            incident.acknowledged_by = actor
            incident.updated_at_ms = max(incident.updated_at_ms, now_ms)
        return self._event(incident, ACKNOWLEDGED)

    def tick(self, now_ms: int) -> list[IncidentEvent]:
        """Announce incidents past their group wait; resolve those without member news for ``stale_ms``; drop
        resolved ones past their cooldown."""
        self._clock_ms = max(self._clock_ms, now_ms)
        changes: dict[str, set[str]] = {}
        for incident in list(self._incidents.values()):
            if incident.status != RESOLVED and now_ms - incident.updated_at_ms >= self.config.stale_ms:
                incident.status, incident.resolved_at_ms, incident.updated_at_ms = RESOLVED, now_ms, now_ms
                changes[incident.incident_id] = {RESOLVED}
        out = self._events(changes)
        self._evict(now_ms)
        return out

    # ---- views ---------------------------------------------------------------------------------------------
    def get(self, incident_id: str) -> IncidentEvent | None:
        incident = self._incidents.get(incident_id)
        return None if incident is None else self._event(incident, _status_name(incident.status))

    def incident_of(self, alert_id: str) -> str | None:
        return self._member_of.get(alert_id)

    def active(self) -> list[IncidentEvent]:
        live = [i for i in self._incidents.values() if i.status != RESOLVED and i.announced]
        live.sort(key=lambda i: (-SEVERITY_RANK[i.severity], i.started_at_ms))
        return [self._event(i, _status_name(i.status)) for i in live]

    # ---- persistence ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"clock_ms": self._clock_ms, "incidents": [i.to_dict() for i in self._incidents.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], config: IncidentConfig | None = None) -> IncidentManager:
        manager = cls(config)
        manager._clock_ms = int(data.get("clock_ms", 0))
        for raw in data.get("incidents", []):
            members = {m["alert_id"]: Member(**m) for m in raw["members"]}
            incident = _Incident(**{**raw, "members": members})
            manager._incidents[incident.incident_id] = incident
            for alert_id in members:
                manager._member_of[alert_id] = incident.incident_id
        return manager

    # ---- internals ------------------------------------------------------------------------------------------
    def _evict(self, now_ms: int) -> None:
        c = self.config
        expired = [i for i in self._incidents.values()
                   if i.status == RESOLVED and now_ms - (i.resolved_at_ms or i.updated_at_ms) >= c.cooldown_ms]
        excess = len(self._incidents) - len(expired) - c.max_incidents
        if excess > 0:
            rest = sorted((i for i in self._incidents.values() if i not in expired),
                          key=lambda i: (i.status != RESOLVED, i.updated_at_ms))
            expired += rest[:excess]
        for incident in expired:
            self._incidents.pop(incident.incident_id, None)
            for alert_id in incident.members:
                self._member_of.pop(alert_id, None)

    def _event(self, incident: _Incident, status: str, paging: bool = False) -> IncidentEvent:
        scope, key = incident.scope()
        ordered = incident.worst()
        priority = self._priority(incident)
        rules = list(dict.fromkeys(m.rule for m in ordered))
        mitigations = list(dict.fromkeys(mitigation_for(rule) for rule in rules))
        return IncidentEvent(
            incident_id=incident.incident_id,
            status=status,
            paging=paging,
            scope=scope,
            scope_key=key,
            severity=incident.severity,
            priority=priority,
            summary=_summary(scope, key, ordered),
            rules=rules,
            services=sorted({m.service for m in ordered if m.service}),
            models=sorted({m.model for m in ordered if m.model}),
            providers=sorted({m.provider for m in ordered if m.provider}),
            members=[
                {"alert_id": m.alert_id, "rule": m.rule, "severity": m.severity, "status": m.status,
                 "service": m.service, "model": m.model, "provider": m.provider, "summary": m.summary}
                for m in ordered[: self.config.max_members_listed]
            ],
            member_count=len(ordered),
            mitigation=" ".join(mitigations),
            started_at_ms=incident.started_at_ms,
            updated_at_ms=incident.updated_at_ms,
            resolved_at_ms=incident.resolved_at_ms,
            acknowledged_by=incident.acknowledged_by,
            labels={"family": incident.family, "scope": scope, "scope_key": key},
        )


def _holds_on_series(incident: _Incident, member: Member, family: str) -> bool:
    """The incident, opened by another family, has a member of ``family`` on the member's series: a runaway
    job's latency incident holding its budget burn takes the job's later crossings of that service's budgets.
    (Members of an informational family join only their own kind.)"""
    if informational(family) or informational(incident.family):
        return False
    return any(family_of(m.rule) == family and same_series(m, member) for m in incident.members.values())


def _shares_series(incident: _Incident, member: Member) -> bool:
    """The member is on a series one of the incident's members is on (``same_series``)."""
    return any(same_series(m, member) for m in incident.members.values())


def _strongest(kinds: set[str]) -> str:
    for kind in (OPENED, ESCALATED, RESOLVED, ACKNOWLEDGED):
        if kind in kinds:
            return kind
    return UPDATED


def _status_name(status: str) -> str:
    return {FIRING: UPDATED, ACKNOWLEDGED: ACKNOWLEDGED, RESOLVED: RESOLVED}[status]


_SCOPE_NAMES = {"series": "{}", "service": "service {}", "model": "model {}", "provider": "provider {}",
                "fleet": "fleet"}


def _phrase(member: Member) -> str:
    v, rule = member.observed, member.rule
    if rule in ("latency_p95", "latency_p99", "ttft_p95", "ttft_p99"):
        return f"{rule.replace('_', ' ')} {v:.2f} s"
    if rule in ("error_rate", "no_answer_rate"):
        return f"{rule.replace('_', ' ')} {v:.0%}"
    if rule == "provider_circuit":
        return "provider circuit open"
    if rule == "cost_per_request":
        return f"cost ${v:.4f}/request"
    return member.summary


def _summary(scope: str, key: str, ordered: list[Member]) -> str:
    """"provider anthropic: error rate 38% across 6 series; also provider_circuit, latency_p99"."""
    head = ordered[0]
    series = {m.series for m in ordered if m.service and m.model}
    text = f"{_SCOPE_NAMES[scope].format(key)}: {_phrase(head)}"
    if len(series) > 1:
        text += f" across {len(series)} series"
    others = [r for r in dict.fromkeys(m.rule for m in ordered) if r != head.rule]
    if others:
        text += "; also " + ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
    return text
