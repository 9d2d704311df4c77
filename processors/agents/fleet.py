"""Agent: per-record summaries from every calls partition -> fleet-wide budgets, provider circuits, incidents.

One partition, so one owner and one order; summaries carry their source offsets (see core/fleet.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust

from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.circuit import CircuitTransition
from llmpulse.processors.core.incidents import IncidentEvent
from llmpulse.processors.core.keyed_state import Admission

if TYPE_CHECKING:
    from llmpulse.processors.app import Worker


def register(worker: Worker, app: faust.App) -> None:
    @app.agent(worker.fleet_topic, name="llmpulse.fleet")
    async def apply_fleet(stream: faust.StreamT) -> None:
        async for events in stream.take_events(64, within=0.05):
            async with worker.state_lock:
                await _apply_group(worker, events)


async def _apply_group(worker: Worker, events: Sequence[faust.EventT]) -> None:
    from llmpulse.processors.app import FLEET_ALERTS_PARTITION

    if not worker.owns_fleet():
        return  # revoked while buffered: the new owner applies these summaries itself
    fleet = worker.fleet_engine()
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
        outcome = fleet.apply(event.value)
        alerts += outcome.alerts
        transitions += outcome.transitions
        incidents += outcome.incidents
    await worker.emit_alerts(alerts, FLEET_ALERTS_PARTITION, wait=True)
    await worker.emit_incidents(incidents, wait=True)
    await worker.emit_provider_states(transitions)
    if changed:
        worker.persist_fleet()
    if hole:
        await worker.rewind(worker.fleet_topic, 0, fleet.cursor)
