"""Incidents: one page per likely cause, fleet-wide; lifecycle; idempotent under replays."""

from __future__ import annotations

from typing import Any

from llmpulse.processors.core.incidents import IncidentConfig, IncidentManager

T0 = 1_700_000_000_000
S = 1000


def alert(rule: str, service: str | None, model: str | None, provider: str | None, *, status: str = "firing",
          severity: str = "WARNING", at: int = 0, started: int | None = None, observed: float = 1.0,
          alert_id: str | None = None) -> dict[str, Any]:
    started_at = T0 + (at if started is None else started)
    return {
        "alert_id": alert_id or f"{rule}-{service}-{model}-{provider}-{started_at}",
        "rule": rule, "severity": severity, "status": status, "service": service, "model": model,
        "provider": provider, "summary": f"{rule} on {service}/{model}", "observed": observed,
        "started_at_ms": started_at, "updated_at_ms": T0 + at,
    }


def pages(events: list[Any]) -> list[Any]:
    return [e for e in events if e.paging and e.status in ("opened", "escalated")]


def manager_now(**config: Any) -> IncidentManager:
    """A manager that announces at once (no group wait), to look at grouping alone."""
    return IncidentManager(IncidentConfig(**{"group_wait_ms": 0, **config}))


FLEET = [("chat", "gpt-4o", "openai"), ("chat", "claude-3-5-haiku", "anthropic"),
         ("search", "gpt-4o-mini", "openai"), ("search", "claude-3-5-sonnet", "anthropic")]


def test_a_fleet_wide_latency_spike_is_one_incident_paged_once() -> None:
    manager = IncidentManager()  # default group wait: p95 everywhere, then p99, fold into the first page
    events = []
    for i, (service, model, provider) in enumerate(FLEET):
        events += manager.apply([alert("latency_p95", service, model, provider, at=i * 3 * S)])
    for i, (service, model, provider) in enumerate(FLEET):
        events += manager.apply([alert("latency_p99", service, model, provider, severity="CRITICAL",
                                       at=15 * S + i * S)])
    assert len({e.incident_id for e in events}) == 1
    assert [(e.status, e.priority) for e in pages(events)] == [("opened", "P0")]
    last = events[-1]
    assert (last.scope, last.member_count, last.severity) == ("fleet", 8, "CRITICAL")
    assert "across 4 series" in last.summary and last.summary.startswith("fleet: latency p99")


def test_the_group_wait_announces_a_warning_once_and_a_later_escalation_pages_again() -> None:
    manager = IncidentManager(IncidentConfig(group_wait_ms=60 * S))
    assert manager.apply([alert("error_rate", "chat", "gpt-4o", "openai")]) == []  # waiting for company
    assert manager.tick(T0 + 30 * S) == []
    announced = manager.tick(T0 + 60 * S)
    assert [(e.status, e.priority, e.paging) for e in announced] == [("opened", "P2", True)]
    assert manager.tick(T0 + 65 * S) == []
    worse = manager.apply([alert("error_rate", "search", "gpt-4o", "openai", severity="CRITICAL", at=90 * S)])
    assert [(e.status, e.priority, e.paging) for e in worse] == [("escalated", "P0", True)]


def test_the_wait_restarts_while_severity_climbs_and_is_capped() -> None:
    manager = IncidentManager(IncidentConfig(group_wait_ms=60 * S, max_group_wait_ms=180 * S))
    manager.apply([alert("error_rate", "chat", "gpt-4o", "openai")])
    assert manager.apply([alert("provider_circuit", None, "gpt-4o", "openai", severity="ERROR", at=50 * S)]) == []
    assert manager.tick(T0 + 100 * S) == []  # ERROR reached at 50 s: not steady for 60 s yet
    assert [(e.status, e.priority) for e in manager.tick(T0 + 110 * S)] == [("opened", "P1")]
    capped = IncidentManager(IncidentConfig(group_wait_ms=60 * S, max_group_wait_ms=90 * S))
    capped.apply([alert("error_rate", "chat", "gpt-4o", "openai")])
    capped.apply([alert("provider_circuit", None, "gpt-4o", "openai", severity="ERROR", at=50 * S)])
    assert [e.status for e in capped.tick(T0 + 90 * S)] == ["opened"]


def test_a_rate_climbing_from_warning_to_critical_inside_the_wait_pages_once_at_critical() -> None:
    manager = IncidentManager()
    assert manager.apply([alert("error_rate", "chat", "gpt-4o", "openai")]) == []
    climbed = manager.apply([alert("error_rate", "chat", "gpt-4o", "openai", severity="CRITICAL", at=40 * S,
                                   started=0)])  # the same alert, escalated
    assert [(e.status, e.priority) for e in pages(climbed)] == [("opened", "P0")]


def test_informational_members_never_widen_a_paging_incident() -> None:
    manager = manager_now()
    paging = manager.apply([alert("cost_per_request", "chat", "gpt-4o", "openai")])[0]
    info = manager.apply([alert("token_average", "search", "gpt-4o-mini", "openai", severity="INFO", at=S)])[0]
    assert info.incident_id != paging.incident_id and not info.paging
    assert manager.get(paging.incident_id).scope == "series"  # type: ignore[union-attr]


def test_a_provider_outage_groups_errors_latency_and_the_circuit_under_the_provider() -> None:
    manager = manager_now()
    members = [alert("error_rate", "chat", "claude-3-5-haiku", "anthropic", severity="CRITICAL", observed=0.38),
               alert("error_rate", "search", "claude-3-5-sonnet", "anthropic", severity="CRITICAL", at=3 * S),
               alert("provider_circuit", None, "claude-3-5-haiku", "anthropic", severity="ERROR", at=4 * S),
               alert("latency_p99", "chat", "claude-3-5-haiku", "anthropic", severity="CRITICAL", at=30 * S)]
    events = manager.apply(members)
    assert len(events) == 1 and events[0].status == "opened" and events[0].paging
    incident = events[0]
    assert (incident.scope, incident.scope_key) == ("provider", "anthropic")
    assert incident.summary.startswith("provider anthropic: error rate 38% across 2 series")
    assert set(incident.rules) == {"error_rate", "provider_circuit", "latency_p99"}
    assert "fallback" in incident.mitigation


def test_scope_narrows_to_what_members_share() -> None:
    def scope_of(*members: dict[str, Any]) -> tuple[str, str]:
        event = manager_now().apply(list(members))[0]
        return event.scope, event.scope_key

    one = alert("error_rate", "chat", "gpt-4o", "openai")
    assert scope_of(one, alert("latency_p95", "chat", "gpt-4o", "openai", at=S)) == ("series", "chat/gpt-4o/openai")
    assert scope_of(one, alert("error_rate", "chat", "gpt-4o-mini", "openai", at=S)) == ("service", "chat")
    assert scope_of(one, alert("error_rate", "search", "gpt-4o", "openai", at=S)) == ("model", "gpt-4o")
    assert scope_of(one, alert("error_rate", "search", "gpt-4o-mini", "openai", at=S)) == ("provider", "openai")
    assert scope_of(one, alert("error_rate", "search", "claude-3-5-haiku", "anthropic", at=S)) == ("fleet", "fleet")


def test_different_causes_and_distant_times_stay_separate() -> None:
    manager = manager_now()
    latency = manager.apply([alert("latency_p95", "chat", "gpt-4o", "openai")])
    leak = manager.apply([alert("pii_leak", "chat", "gpt-4o-mini", "openai", at=S)])
    assert latency[0].incident_id != leak[0].incident_id  # another cause on another series
    # same family, other series, well after the group window: a new incident
    later = manager.apply([alert("latency_p95", "search", "claude-3-5-sonnet", "anthropic", at=20 * 60 * S)])
    assert later[0].status == "opened" and later[0].incident_id != latency[0].incident_id
    # ... but a member inside the live incident's scope joins it whenever it fires
    joined = manager.apply([alert("latency_p99", "chat", "gpt-4o", "openai", at=25 * 60 * S)])
    assert joined[0].incident_id == latency[0].incident_id and not pages(joined)


def test_resolves_when_every_member_resolved_and_a_flap_in_the_cooldown_does_not_page_again() -> None:
    manager = manager_now(cooldown_ms=10 * 60 * S)
    a = alert("error_rate", "chat", "gpt-4o", "openai")
    b = alert("error_rate", "search", "gpt-4o", "openai", at=S)
    opened = manager.apply([a, b])
    assert opened[0].status == "opened"
    assert manager.apply([{**a, "status": "resolved", "updated_at_ms": T0 + 120 * S}])[0].status == "updated"
    resolved = manager.apply([{**b, "status": "resolved", "updated_at_ms": T0 + 130 * S}])
    assert [(e.status, e.paging, e.resolved_at_ms) for e in resolved] == [("resolved", True, T0 + 130 * S)]
    flap = manager.apply([alert("error_rate", "chat", "gpt-4o", "openai", at=300 * S)])
    assert flap[0].incident_id == opened[0].incident_id and flap[0].status == "updated" and not flap[0].paging
    assert manager.get(opened[0].incident_id).resolved_at_ms is None  # type: ignore[union-attr]


def test_a_cause_that_moves_to_another_service_after_the_resolve_reopens_the_incident_without_paging() -> None:
    manager = manager_now(cooldown_ms=10 * 60 * S)
    first = alert("hallucination", "search", "gpt-4o-mini", "openai")
    opened = manager.apply([first])
    manager.apply([{**first, "status": "resolved", "updated_at_ms": T0 + 40 * S}])
    moved = manager.apply([alert("hallucination", "chat", "gpt-4o-mini", "openai", at=60 * S)])
    assert [(e.incident_id, e.status, e.paging) for e in moved] == [(opened[0].incident_id, "updated", False)]
    assert moved[0].scope == "model"
    later = manager.apply([alert("hallucination", "billing", "gpt-4o", "openai", at=(60 + 6 * 60) * S)])
    assert later[0].incident_id != opened[0].incident_id and later[0].paging  # past the group window: new cause


def test_info_members_are_recorded_but_never_page() -> None:
    manager = manager_now()
    events = manager.apply([alert("budget_projection", None, None, None, severity="INFO")])
    assert events[0].status == "opened" and events[0].priority == "P3" and not events[0].paging


def test_replays_and_stale_events_change_nothing_and_ids_are_stable() -> None:
    members = [alert("latency_p95", s, m, p, at=i * S) for i, (s, m, p) in enumerate(FLEET)]
    first = manager_now()
    events = first.apply(members)
    assert first.apply(members) == []  # every member again: no change, no event
    older = {**members[0], "status": "firing", "updated_at_ms": members[0]["updated_at_ms"] - S}
    assert first.apply([older]) == []
    restored = IncidentManager.from_dict(first.to_dict(), first.config)
    assert restored.apply(members) == []
    again = manager_now().apply(members)  # a replay from scratch: same incident id
    assert [e.incident_id for e in again] == [e.incident_id for e in events]


def test_the_stored_state_keeps_its_format() -> None:
    """Workers of earlier versions wrote this (fields in declaration order, members last); the state still reads
    and writes as they did, and nothing kept only for reading (an incident's scope) is written."""
    manager = manager_now()
    manager.apply([alert("error_rate", "chat", "gpt-4o", "openai", observed=0.25)])
    manager.get(manager.active()[0].incident_id)  # the scope is worked out, and kept
    stored = manager.to_dict()
    assert stored == {"clock_ms": T0, "incidents": [{
        "incident_id": manager.active()[0].incident_id, "family": "availability", "status": "firing",
        "severity": "WARNING", "started_at_ms": T0, "updated_at_ms": T0, "last_member_start_ms": T0,
        "resolved_at_ms": None, "acknowledged_by": None, "announced": True, "severity_since_ms": 0, "paged": True,
        "paged_urgent": False, "members": [{
            "alert_id": f"error_rate-chat-gpt-4o-openai-{T0}", "rule": "error_rate", "service": "chat",
            "model": "gpt-4o", "provider": "openai", "started_at_ms": T0, "status": "firing", "severity": "WARNING",
            "summary": "error_rate on chat/gpt-4o", "observed": 0.25, "updated_at_ms": T0}]}]}
    assert list(stored["incidents"][0]) == [  # the order too: the blob's bytes stay what they were
        "incident_id", "family", "status", "severity", "started_at_ms", "updated_at_ms", "last_member_start_ms",
        "resolved_at_ms", "acknowledged_by", "announced", "severity_since_ms", "paged", "paged_urgent", "members"]
    assert list(stored["incidents"][0]["members"][0]) == [
        "alert_id", "rule", "service", "model", "provider", "started_at_ms", "status", "severity", "summary",
        "observed", "updated_at_ms"]
    assert IncidentManager.from_dict(stored, manager.config).to_dict() == stored


def test_acknowledge_is_idempotent_and_escalation_clears_it() -> None:
    manager = manager_now()
    incident = manager.apply([alert("error_rate", "chat", "gpt-4o", "openai")])[0]
    acked = manager.acknowledge(incident.incident_id, "alice", T0 + 10 * S)
    assert acked is not None and (acked.status, acked.acknowledged_by, acked.paging) == ("acknowledged", "alice", False)
    assert manager.acknowledge(incident.incident_id, "bob", T0 + 11 * S).acknowledged_by == "alice"  # type: ignore[union-attr]
    assert manager.acknowledge("inc-unknown", "bob", T0) is None
    worse = manager.apply([alert("error_rate", "chat", "gpt-4o-mini", "openai", severity="CRITICAL", at=20 * S)])
    assert (worse[0].status, worse[0].acknowledged_by, worse[0].paging) == ("escalated", None, True)


def test_stale_incidents_resolve_and_resolved_ones_are_evicted_after_the_cooldown() -> None:
    config = IncidentConfig(group_wait_ms=0, stale_ms=60 * 60 * S, cooldown_ms=10 * 60 * S)
    manager = IncidentManager(config)
    incident = manager.apply([alert("error_rate", "chat", "gpt-4o", "openai")])[0]
    assert manager.tick(T0 + 30 * 60 * S) == []
    stale = manager.tick(T0 + 60 * 60 * S)
    assert [(e.incident_id, e.status) for e in stale] == [(incident.incident_id, "resolved")]
    manager.tick(T0 + 71 * 60 * S)
    assert manager.get(incident.incident_id) is None and manager.incident_of(incident.member_ids[0]) is None


def test_one_series_slow_and_expensive_and_over_budget_is_one_incident() -> None:
    manager = manager_now()
    cost = manager.apply([alert("cost_per_request", "batch", "claude-3-5-sonnet", "anthropic")])[0]
    slow = manager.apply([alert("latency_p99", "batch", "claude-3-5-sonnet", "anthropic", severity="CRITICAL",
                                at=40 * S)])[0]
    budget = manager.apply([alert("budget", None, None, None, severity="CRITICAL", at=90 * S)])[0]
    assert slow.incident_id == cost.incident_id == budget.incident_id
    assert [e.status for e in (slow, budget)] == ["escalated", "updated"]
    drift = manager.apply([alert("distribution_drift", "batch", "claude-3-5-sonnet", None, at=95 * S)])[0]
    assert drift.incident_id == cost.incident_id  # drift series carry no provider: service and model suffice
    other = manager.apply([alert("latency_p99", "chat", "gpt-4o", "openai", severity="CRITICAL", at=100 * S)])[0]
    assert other.incident_id != cost.incident_id  # another series, another family: another cause


def test_an_escalation_inside_the_urgent_tier_does_not_page_again() -> None:
    manager = manager_now()
    events = manager.apply([alert("provider_circuit", None, "gpt-4o", "openai", severity="ERROR")])
    events += manager.apply([alert("error_rate", "chat", "gpt-4o", "openai", severity="CRITICAL", at=90 * S)])
    assert [(e.status, e.priority, e.paging) for e in events] == [("opened", "P1", True), ("escalated", "P0", False)]
    resolved = manager.apply([
        {**alert("provider_circuit", None, "gpt-4o", "openai", severity="ERROR"), "status": "resolved",
         "updated_at_ms": T0 + 300 * S},
        {**alert("error_rate", "chat", "gpt-4o", "openai", severity="CRITICAL", at=90 * S), "status": "resolved",
         "updated_at_ms": T0 + 300 * S},
    ])
    assert [(e.status, e.paging) for e in resolved] == [("resolved", True)]


def test_an_informational_member_that_turns_paging_leaves_the_informational_incident() -> None:
    manager = manager_now()
    early = alert("budget", None, None, None, severity="INFO")  # 80 %: informational, opens the incident
    info = manager.apply([early])[0]
    manager.apply([alert("token_average", "chat", "gpt-4o", "openai", severity="INFO", at=S)])
    paged = manager.apply([{**early, "severity": "CRITICAL", "updated_at_ms": T0 + 60 * S}])  # 100 %
    assert [(e.status, e.priority, e.member_count) for e in pages(paged)] == [("opened", "P0", 1)]
    assert paged[0].incident_id != info.incident_id and paged[0].rules == ["budget"]
    left = manager.get(info.incident_id)
    assert left is not None and left.member_count == 1
    assert (left.scope, left.scope_key) == ("series", "chat/gpt-4o/openai")  # narrowed again once the budget left


def test_a_drift_symptom_does_not_hold_its_cause_open_and_lingers_silently() -> None:
    manager = manager_now()
    spike = alert("latency_p95", "chat", "gpt-4o", "openai")
    drift = alert("distribution_drift", "chat", "gpt-4o", "openai", at=30 * S)
    opened = manager.apply([spike, drift])
    assert len({e.incident_id for e in opened}) == 1
    resolved = manager.apply([{**spike, "status": "resolved", "updated_at_ms": T0 + 200 * S}])
    assert [(e.status, e.paging) for e in resolved] == [("resolved", True)]  # the drift member still fires
    assert manager.apply([{**drift, "updated_at_ms": T0 + 260 * S, "observed": 2.0}]) == []
    assert manager.apply([{**drift, "status": "resolved", "updated_at_ms": T0 + 900 * S}]) == []


def test_a_distribution_drift_alone_is_recorded_not_paged_and_a_confidence_drop_beside_it_pages_on_its_own() -> None:
    manager = manager_now()
    drift = alert("distribution_drift", "chat", "gpt-4o", "openai")
    [quiet] = manager.apply([drift])
    assert (quiet.status, quiet.priority, quiet.paging, quiet.severity) == ("opened", "P3", False, "WARNING")
    drop = alert("confidence_drift", "chat", "gpt-4o", "openai", at=10 * S)
    [loud] = manager.apply([drop])  # a cause on the same series: an incident of its own, which pages
    assert (loud.status, loud.priority, loud.paging) == ("opened", "P2", True)
    assert loud.incident_id != quiet.incident_id and loud.rules == ["confidence_drift"]
    [ended] = manager.apply([{**drift, "status": "resolved", "updated_at_ms": T0 + 60 * S}])
    assert (ended.incident_id, ended.status, ended.paging) == (quiet.incident_id, "resolved", False)
    [ended] = manager.apply([{**drop, "status": "resolved", "updated_at_ms": T0 + 90 * S}])
    assert (ended.incident_id, ended.status, ended.paging) == (loud.incident_id, "resolved", True)


def test_a_service_budget_joins_the_incident_of_a_series_of_that_service() -> None:
    manager = IncidentManager()
    slow = manager.apply([alert("latency_p99", "docs-qa", "claude-3-5-sonnet", "anthropic", severity="CRITICAL")])
    budget = manager.apply([alert("budget", "docs-qa", None, None, severity="CRITICAL", at=60 * S)])
    assert {e.incident_id for e in budget} == {slow[0].incident_id}
    assert len(pages(slow + budget)) == 1
    unrelated = manager.apply([alert("budget", None, None, None, severity="CRITICAL", at=70 * S)])
    assert unrelated[0].incident_id != slow[0].incident_id  # a global budget names no series: its own cause


def test_a_late_drift_symptom_joins_its_cause_live_or_cooling_down_and_never_pages() -> None:
    manager = manager_now(cooldown_ms=10 * 60 * S)
    spike = alert("latency_p95", "chat", "gpt-4o", "openai")
    opened = manager.apply([spike])
    late = manager.apply([alert("distribution_drift", "chat", "gpt-4o", None, at=8 * 60 * S)])
    assert [(e.incident_id, e.status, e.paging) for e in late] == [(opened[0].incident_id, "updated", False)]
    manager.apply([{**spike, "status": "resolved", "updated_at_ms": T0 + 9 * 60 * S}])
    after = manager.apply([alert("confidence_drift", "chat", "gpt-4o", None, at=12 * 60 * S)])
    assert after == [] and manager.incident_of(f"confidence_drift-chat-gpt-4o-None-{T0 + 12 * 60 * S}") \
        == opened[0].incident_id
    much_later = manager.apply([alert("confidence_drift", "chat", "gpt-4o", None, at=30 * 60 * S)])
    assert much_later[0].incident_id != opened[0].incident_id and much_later[0].paging


def test_a_runaways_incident_takes_the_later_budget_crossings_of_the_service_it_ran_on() -> None:
    manager = manager_now()
    slow = manager.apply([alert("latency_p99", "docs-qa", "claude-3-5-sonnet", "anthropic", severity="CRITICAL")])
    burn = manager.apply([alert("budget_burn", "docs-qa", "claude-3-5-sonnet", None, severity="ERROR", at=30 * S)])
    assert burn[0].incident_id == slow[0].incident_id and pages(burn) == []  # the user's burn, on that series
    manager.apply([alert("latency_p99", "docs-qa", "claude-3-5-sonnet", "anthropic", status="resolved",
                         severity="CRITICAL", at=300 * S)])  # the job stopped; its spend stays
    later = manager.apply([alert("budget", "docs-qa", None, None, severity="WARNING", at=40 * 60 * S)])
    assert later[0].incident_id == slow[0].incident_id and pages(later) == []  # its service's day budget
    elsewhere = manager.apply([alert("budget", "billing", None, None, severity="WARNING", at=41 * 60 * S)])
    assert elsewhere[0].incident_id != slow[0].incident_id and len(pages(elsewhere)) == 1


def test_an_incident_resolves_when_a_member_escalated_by_the_timer_resolves_on_event_time() -> None:
    """The timer judges on the wall clock, records on their event time, which lags it when a worker catches up
    (or replays --fast traffic). A member escalated by the timer and then resolved by its calls must still resolve
    its incident: an alert's events never go back in time."""
    from llmpulse.processors.core.alert_policy import AlertConfig, AlertPolicy, Observation

    policy = AlertPolicy(AlertConfig(resolve_hold_ms=15 * S))
    labels = (("model", "gpt-4o"), ("service", "support-bot"))

    def observe(severity: str | None, at_ms: int) -> list[dict[str, Any]]:
        obs = Observation("confidence_drift", labels, severity, 0.2, 0.1, "", "drift", at_ms)
        return [event.to_record() for event in policy.observe(obs)]

    wall = T0 + 600 * S  # the timer's clock, ten minutes ahead of the calls' event time
    records = observe("WARNING", T0) + observe("CRITICAL", wall)  # the timer sees it worse first
    records += observe(None, T0 + 60 * S) + observe(None, T0 + 80 * S)  # the calls clear it, held 20 s
    assert [r["status"] for r in records] == ["firing", "firing", "resolved"]
    manager = manager_now()
    events = [event for record in records for event in manager.apply([record])]  # each as its summary brings it
    assert events[0].status == "opened" and events[-1].status == "resolved", [(e.status, e.summary) for e in events]
