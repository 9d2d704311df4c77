"""Agent: per-record summaries from every calls partition -> fleet-wide budgets, provider circuits, incidents.

One partition, so one owner and one order; summaries carry their source offsets (see core/fleet.py). Alerts,
incidents and provider states are on the broker before the fleet blob that says they were decided.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import faust

from llmpulse import schemas
from llmpulse.processors.clock import now_ms
from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.budget_state import REFRESH_S
from llmpulse.processors.core.circuit import CircuitTransition
from llmpulse.processors.core.incidents import IncidentEvent
from llmpulse.processors.core.keyed_state import Admission
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import EngineStore
from llmpulse.processors.ownership import PartitionOwnership
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

log = logging.getLogger("llmpulse.worker.fleet")


@dataclass(frozen=True, slots=True)
class FleetAgent:
    store: EngineStore  # the fleet engine
    emitter: Emitter  # its alerts, incidents, provider states and budget states
    ownership: PartitionOwnership  # summaries are applied only while the fleet stage's one partition is ours
    # operator commands another worker passed on (agents/commands.py): Avro among the JSON summaries
    commands: SchemaCodec = field(default_factory=lambda: SchemaCodec(schemas.ALERT_COMMAND))

    def register(self, app: faust.App, topic: faust.TopicT) -> None:
        @app.agent(topic, name="llmpulse.fleet")
        async def apply_fleet(stream: faust.StreamT) -> None:
            async for events in stream.take_events(64, within=0.05):
                async with self.store.lock:
                    await self.apply_group(events)

        @app.timer(interval=REFRESH_S, name="llmpulse.budget_state")
        async def refresh_budget_states() -> None:
            async with self.store.lock:  # the global records are the heartbeat: published before any traffic too
                if self.ownership.ready() and self.ownership.owns_fleet():
                    fleet = self.store.fleet()
                    await self.emitter.send_budget_states(fleet.budget_records(now_ms(), refresh=True))

    async def apply_group(self, events: Sequence[faust.EventT]) -> None:
        if not self.ownership.owns_fleet():
            return  # revoked while buffered: the new owner applies these summaries itself
        fleet = self.store.fleet()
        alerts: list[AlertEvent] = []
        transitions: list[CircuitTransition] = []
        incidents: list[IncidentEvent] = []
        changed = hole = False
        for event in events:
            offset = event.message.offset
            admission = fleet.cursor.admit(offset)
            hole |= admission is Admission.REWIND
            if admission is not Admission.PROCESS:
                continue
            fleet.cursor.advance(offset)
            changed = True
            if not event.value:
                continue
            if not event.value.startswith(b"{"):  # not a JSON summary: an acknowledgement passed on
                acked_alerts, acked_incidents = self._acknowledge(event.value)
                alerts += acked_alerts
                incidents += acked_incidents
                continue
            outcome = fleet.apply(event.value)
            alerts += outcome.alerts
            transitions += outcome.transitions
            incidents += outcome.incidents
        await self.emitter.send_fleet_alerts(alerts, wait=True)
        await self.emitter.send_incidents(incidents, wait=True)
        await self.emitter.send_provider_states(transitions)
        if changed:  # a budget that changed state leaves now; new spend waits for the refresh timer
            await self.emitter.send_budget_states(fleet.budget_records(now_ms(), refresh=False))
            self.store.checkpoint_fleet(now_ms())
        if hole:
            await self.ownership.rewind_fleet(fleet.cursor)

    def _acknowledge(self, value: bytes) -> tuple[list[AlertEvent], list[IncidentEvent]]:
        try:
            command = self.commands.decode(value)
        except DecodeError as exc:
            log.warning("ignoring an unreadable record on the fleet topic: %s", exc)
            return [], []
        if command["action"] != "acknowledge":
            return [], []
        return self.store.fleet().acknowledge(command["alert_id"], command["actor"], now_ms())
