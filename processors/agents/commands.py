"""Agent: operator commands (acknowledge) -> the engine owning the alert -> an acknowledged event.

Commands are written to the partition the alert came from, so they reach the worker that owns it. Incidents
and fleet-wide alerts live in the fleet stage; acknowledging an incident there marks the incident, and the
web layer sends one command per member to the members' own partitions. Their alerts-topic partition is the fleet
stage's, but its commands partition may be another worker's: that worker passes the command on to the fleet
topic, where the fleet stage's owner applies it (agents/fleet.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faust

from llmpulse.processors.clock import now_ms
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import EngineStore
from llmpulse.processors.ownership import PartitionOwnership
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

log = logging.getLogger("llmpulse.worker.commands")


@dataclass(frozen=True, slots=True)
class CommandsAgent:
    store: EngineStore  # the engine that holds the alert, changed and persisted under the state lock
    emitter: Emitter  # the acknowledged event, to the alerts topic and to the fleet stage
    ownership: PartitionOwnership  # whether the fleet stage is this worker's, or a command is passed on
    codec: SchemaCodec  # the alert-command schema

    def register(self, app: faust.App, topic: faust.TopicT) -> None:
        @app.agent(topic, name="llmpulse.commands")
        async def apply_commands(stream: faust.StreamT) -> None:
            async for event in stream.events():
                try:
                    command = self.codec.decode(event.value or b"")
                except DecodeError as exc:
                    log.warning("ignoring unreadable alert command: %s", exc)
                    continue
                if command["action"] != "acknowledge":
                    continue
                async with self.store.lock:  # persisting mid-group would write another agent's unfinished state
                    await self.acknowledge(command["alert_id"], command["actor"], event.message.partition)

    async def acknowledge(self, alert_id: str, actor: str, partition: int) -> None:
        store, emitter = self.store, self.emitter
        acked = None
        # the alert came from this partition's calls engine or, with OTLP ingest, its OTLP engine
        for engine in (store.engine(partition), *store.lane_engines(partition)):
            acked = engine.acknowledge(alert_id, actor, now_ms())
            if acked is not None:
                break
        if acked is not None:
            await emitter.send_alerts([acked], partition)
            delivery = await emitter.send_alerts_to_fleet([acked])  # the incident shows its member acked
            if delivery is not None:
                await delivery
            store.persist(engine, now_ms())
        elif self.ownership.owns_fleet():  # incidents and fleet-wide alerts (budgets, circuits) live here
            alerts, incidents = store.fleet().acknowledge(alert_id, actor, now_ms())
            if alerts or incidents:
                await emitter.send_alerts(alerts, partition)
                await emitter.send_incidents(incidents, wait=True)
                store.persist_fleet(now_ms())
        else:  # another worker owns the fleet stage: it applies the command from the fleet topic
            await (await emitter.send_command_to_fleet(alert_id, "acknowledge", actor))
