"""Scoring a replay against its labelled schedule: detection, delays, pages per incident, false pages.

A *page* is an incident event with ``paging`` set and status ``opened`` or ``escalated``. An injected incident
is *detected* by the first event on-call sees (a page, or a later update of an incident that paged: a member
that joins an incident someone was paged for needs no page of its own), emitted between its start and its
end + ``GRACE_S``, of an incident holding a member that (a) has a rule the kind is expected to fire
(alert_schedule.EXPECTED_RULES), (b) started inside that span, and (c) carries labels that fall in the
injected scope: each of its service, model and provider is either absent (fleet-wide rules: the global budget,
per-user security incidents) or that of an affected series; an ``ab_regression`` member must name the injected
experiment. Detection delay is that member's start minus the injected start, page delay that event's time
minus the injected start; resolve delay is the incident's first ``resolved_at_ms`` after the injected end
minus that end (an incident that merely reopens later, for another member, is not held against it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.alert_fleet import Series
from bench.alert_replay import Emitted, Log
from bench.alert_schedule import EXPECTED_RULES, Injected
from llmpulse.processors.core.alert_policy import AlertEvent

GRACE_S = 300.0


@dataclass(slots=True)
class Verdict:
    """How one injected incident was seen."""

    incident: Injected
    detected_at_ms: int | None = None  # the first matching member's start: when llmpulse saw it
    paged_at_ms: int | None = None  # the page (or paged incident's update) that carried it to on-call
    incident_id: str | None = None
    priority: str | None = None
    resolved_at_ms: int | None = None
    rules: list[str] = field(default_factory=list)
    window_pages: list[str] = field(default_factory=list)  # leading rule of every page in [start, end + grace]

    @property
    def detected(self) -> bool:
        return self.detected_at_ms is not None


def judge(log: Log, schedule: Sequence[Injected], series: Sequence[Series], day_start_ms: int) -> list[Verdict]:
    """One verdict per injected incident, in schedule order."""
    alerts: dict[str, AlertEvent] = {}
    for _, alert in log.members:
        alerts.setdefault(alert.alert_id, alert)
    resolves: dict[str, list[int]] = {}
    for emitted in log.incidents:
        if emitted.event.status == "resolved" and emitted.event.resolved_at_ms is not None:
            resolves.setdefault(emitted.event.incident_id, []).append(emitted.event.resolved_at_ms)
    pages = log.pages()
    seen = log.seen_by_on_call()
    out = []
    for incident in schedule:
        start, end = day_start_ms + int(incident.start_s * 1000), day_start_ms + int(incident.end_s * 1000)
        until = day_start_ms + int((incident.end_s + GRACE_S) * 1000)
        affected = [s for s in series if incident.covers(s)]
        verdict = Verdict(incident)
        verdict.window_pages = [p.event.rules[0] if p.event.rules else "?" for p in pages if start <= p.at_ms <= until]
        for page in seen:
            if not start <= page.at_ms <= until:
                continue
            rules = _matching_rules(page, incident, affected, alerts, start, until)
            if rules:
                first = min(alerts[m["alert_id"]].started_at_ms for m in page.event.members
                            if m["alert_id"] in alerts and m["rule"] in rules
                            and start <= alerts[m["alert_id"]].started_at_ms <= until)
                verdict.detected_at_ms, verdict.paged_at_ms = min(first, page.at_ms), page.at_ms
                verdict.incident_id = page.event.incident_id
                verdict.priority, verdict.rules = page.event.priority, rules
                verdict.resolved_at_ms = _resolved(resolves.get(page.event.incident_id, []), start, end)
                break
        out.append(verdict)
    return out


def _resolved(times: list[int], start: int, end: int) -> int | None:
    """The incident's first resolve after the injected end (a later reopen is another cause's), else its last
    resolve after the injected start (it cleared while the injection went on), else None."""
    after = [t for t in times if t >= end]
    if after:
        return min(after)
    during = [t for t in times if t >= start]
    return max(during) if during else None


def _matching_rules(page: Emitted, incident: Injected, affected: Sequence[Series], alerts: dict[str, AlertEvent],
                    start: int, until: int) -> list[str]:
    expected = EXPECTED_RULES[incident.kind]
    rules = []
    for member in page.event.members:
        alert = alerts.get(member["alert_id"])
        if member["rule"] not in expected or alert is None or not start <= alert.started_at_ms <= until:
            continue
        if member["rule"] == "ab_regression" and alert.labels.get("experiment") != incident.experiment:
            continue
        if any(_consistent(member, s) for s in affected):
            rules.append(str(member["rule"]))
    return sorted(set(rules))


def _consistent(member: dict[str, Any], series: Series) -> bool:
    return all(member.get(name) in (None, getattr(series, name)) for name in ("service", "model", "provider"))


def explained_pages(log: Log, verdicts: Sequence[Verdict], since_ms: int) -> tuple[int, int]:
    """(pages of incidents that detected an injected one, other pages) since ``since_ms``."""
    detecting = {v.incident_id for v in verdicts if v.incident_id}
    pages = log.pages(since_ms)
    explained = sum(1 for p in pages if p.event.incident_id in detecting)
    return explained, len(pages) - explained


def pages_by_priority(log: Log, since_ms: int) -> Counter[str]:
    return Counter(page.event.priority for page in log.pages(since_ms))


def pages_by_rule(log: Log, since_ms: int) -> Counter[str]:
    """Pages counted under the incident's leading rule (its worst member's)."""
    return Counter(page.event.rules[0] if page.event.rules else "?" for page in log.pages(since_ms))


def firings_by_priority(log: Log, since_ms: int) -> Counter[str]:
    return Counter(alert.priority for _, alert in log.member_firings(since_ms))


def quantiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p95) by nearest rank, None when empty. Unlike the suite's lower order statistic, the p95 of a
    handful of incidents is the slowest of them, not the second slowest."""
    if not values:
        return None, None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return float(ordered[max(math.ceil(q * len(ordered)) - 1, 0)])

    return rank(0.5), rank(0.95)
