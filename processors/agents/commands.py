"""Agent: operator commands (acknowledge) -> the engine owning the alert -> an acknowledged event.

Commands are written to the partition the alert came from, so they reach the worker that owns it. Incidents
and fleet-wide alerts live in the fleet stage; acknowledging an incident there marks the incident, and the
web layer sends one command per member to the members' own partitions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import faust

from llmpulse.schemas.codec import DecodeError

if TYPE_CHECKING:
    from llmpulse.processors.app import Worker

log = logging.getLogger("llmpulse.worker.commands")


def register(worker: Worker, app: faust.App) -> None:
    from llmpulse.processors.app import now_ms

    @app.agent(worker.commands_topic, name="llmpulse.commands")
    async def apply_commands(stream: faust.StreamT) -> None:
        async for event in stream.events():
            partition = event.message.partition
            try:
                command = worker.codecs.command.decode(event.value or b"")
            except DecodeError as exc:
                log.warning("ignoring unreadable alert command: %s", exc)
                continue
            if command["action"] != "acknowledge":
                continue
            async with worker.state_lock:  # persisting mid-group would write another agent's unfinished state
                engine = worker.engine_for(partition)
                acked = engine.acknowledge(command["alert_id"], command["actor"], now_ms())
                if acked is not None:
                    await worker.emit_alerts([acked], partition)
                    delivery = await worker.send_alerts_to_fleet([acked])  # the incident shows its member acked
                    if delivery is not None:
                        await delivery
                    worker.persist(engine)
                elif worker.owns_fleet():  # incidents and fleet-wide alerts (budgets, circuits) live here
                    alerts, incidents = worker.fleet_engine().acknowledge(command["alert_id"], command["actor"],
                                                                          now_ms())
                    if alerts or incidents:
                        await worker.emit_alerts(alerts, partition)
                        await worker.emit_incidents(incidents, wait=True)
                        worker.persist_fleet()
