"""The worker's alerting path in one process, driven in event time: partition engines, the fleet engine with
its incidents, and the 5 s timer, wired exactly as processors/agents/calls.py, fleet.py and ticks.py wire them.

Per record: ``engine.process(calls, offset, now_ms)`` on the engine of the record's partition, then
``fleet.apply(outcome.fleet_summary)`` (the summary carries the member alerts the record decided). Every
``TICK_SECONDS`` of event time: ``engine.tick(t)`` on every engine, its alerts to the fleet alone
(``summarize_alerts_for_fleet``), then ``fleet.tick(t)``. Nothing waits on a wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llmpulse.processors import configure
from llmpulse.processors.clock import TICK_SECONDS
from llmpulse.processors.core.alert_policy import FIRING, AlertEvent
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.feedback_join import FeedbackColumns
from llmpulse.processors.core.fleet import FleetEngine, FleetOutcome, summarize_alerts_for_fleet
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.incidents import ESCALATED, OPENED, IncidentEvent
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.settings import ProcessorSettings

TICK_MS = int(TICK_SECONDS * 1000)
PAGING_STATUSES = (OPENED, ESCALATED)


@dataclass(frozen=True, slots=True)
class Emitted:
    """An incident event and the event time it left the pipeline."""

    at_ms: int
    event: IncidentEvent

    @property
    def is_page(self) -> bool:
        return self.event.paging and self.event.status in PAGING_STATUSES


@dataclass(slots=True)
class Log:
    """Everything the pipeline emitted: incident events, member alert events (with their emit time)."""

    incidents: list[Emitted] = field(default_factory=list)
    members: list[tuple[int, AlertEvent]] = field(default_factory=list)

    def pages(self, since_ms: int = 0) -> list[Emitted]:
        return [e for e in self.incidents if e.is_page and e.at_ms >= since_ms]

    def seen_by_on_call(self, since_ms: int = 0) -> list[Emitted]:
        """Pages, and every later event of an incident that paged: a member joining an incident on-call was
        already paged for is in front of them (the incident updates) without a page of its own."""
        paged: set[str] = set()
        out = []
        for emitted in self.incidents:
            if emitted.is_page:
                paged.add(emitted.event.incident_id)
            if emitted.event.incident_id in paged and emitted.at_ms >= since_ms:
                out.append(emitted)
        return out

    def member_firings(self, since_ms: int = 0) -> list[tuple[int, AlertEvent]]:
        """Member alert events that would page if every firing member paged (firing and escalations)."""
        return [(t, a) for t, a in self.members if a.status == FIRING and t >= since_ms and a.priority != "P3"]


class Pipeline:
    """Engines of ``partitions`` calls partitions plus the fleet engine, from ``settings``."""

    def __init__(self, settings: ProcessorSettings, partitions: int) -> None:
        config = configure.engine_config(settings)
        pricer = Pricer(settings.prices_file)
        guard = GuardMonitor(config.guarding)
        self.engines = [PartitionEngine(p, config, pricer, guard) for p in range(partitions)]
        self.fleet = FleetEngine(configure.fleet_config(settings))
        self.offsets = [0] * partitions
        self.log = Log()
        self.calls = 0

    def process(self, partition: int, calls: CallColumns, now_ms: int) -> None:
        engine = self.engines[partition]
        outcome = engine.process(calls, self.offsets[partition], now_ms)
        self.offsets[partition] += 1
        self.calls += len(calls)
        self._members(now_ms, outcome.alerts)
        self._fleet(now_ms, self.fleet.apply(outcome.fleet_summary))

    def feedback(self, partition: int, feedback: FeedbackColumns, now_ms: int) -> None:
        """Reviewers' verdicts on calls already processed: on the calls' partition, as the SDK keys them."""
        outcome = self.engines[partition].process_feedback(feedback, self.offsets[partition], now_ms)
        self.offsets[partition] += 1
        self._members(now_ms, outcome.alerts)
        self._fleet(now_ms, self.fleet.apply(outcome.fleet_summary))

    def tick(self, now_ms: int) -> None:
        for engine in self.engines:
            alerts = engine.tick(now_ms)
            if alerts:
                self._members(now_ms, alerts)
                self._fleet(now_ms, self.fleet.apply(summarize_alerts_for_fleet(alerts)))
        self._fleet(now_ms, self.fleet.tick(now_ms))

    def drain(self) -> None:
        """The agents persist state once per group of records; here it only keeps the state objects bounded."""
        for engine in self.engines:
            engine.drain_state()

    def _members(self, now_ms: int, alerts: Iterable[AlertEvent]) -> None:
        self.log.members.extend((now_ms, alert) for alert in alerts)

    def _fleet(self, now_ms: int, outcome: FleetOutcome) -> None:
        self._members(now_ms, outcome.alerts)
        self.log.incidents.extend(Emitted(now_ms, event) for event in outcome.incidents)


def describe_page(page: Emitted) -> dict[str, Any]:
    e = page.event
    return {"at_ms": page.at_ms, "status": e.status, "priority": e.priority, "scope": e.scope,
            "scope_key": e.scope_key, "rules": e.rules, "incident_id": e.incident_id}
