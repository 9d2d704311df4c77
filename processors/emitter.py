"""Emitter: every record the worker writes besides its state (alerts, incidents, provider state, dead letters,
fleet summaries and alert events for the fleet stage, operator commands), each counted in the metrics.

A ``send_*`` call queues the records with the producer; the methods that return a delivery (or take
``wait=True``) let the caller wait for the broker's acknowledgement before it persists state saying the
records were sent: a crash then repeats a record, never loses one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import faust

from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.circuit import CircuitTransition
from llmpulse.processors.core.fleet import summarize_alerts_for_fleet
from llmpulse.processors.core.incidents import IncidentEvent
from llmpulse.processors.core.quality import RouteDecision
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.wire.calls import Refused
from llmpulse.processors.wire.outputs import RecordCodecs
from llmpulse.processors.wiring import FLEET_ALERTS_PARTITION, FLEET_PARTITION
from llmpulse.producers.routes import MODEL_ROUTE
from llmpulse.schemas.single_object import SchemaCodec

log = logging.getLogger("llmpulse.worker")


class Emitter:
    def __init__(self, *, alerts: faust.TopicT, dead_letter: faust.TopicT, commands: faust.TopicT,
                 provider_state: faust.TopicT, fleet: faust.TopicT, codecs: RecordCodecs,
                 exporter: MetricsExporter, budget_state: faust.TopicT | None = None,
                 model_routes: faust.TopicT | None = None) -> None:
        self._alerts = alerts
        self._dead_letter = dead_letter
        self._commands = commands
        self._provider_state = provider_state
        self._budget_state = budget_state
        self._model_routes = model_routes
        self._route_codec = SchemaCodec(MODEL_ROUTE)
        self._fleet = fleet
        self._codecs = codecs
        self._exporter = exporter

    async def send_alerts(self, events: list[AlertEvent], partition: int, wait: bool = False) -> None:
        """Send alert events to the partition they came from; ``wait`` awaits the broker's ack."""
        pending = []
        for event in events:
            log.info("alert %s %s %s: %s", event.status, event.severity, event.rule, event.summary,
                     extra={"alert_id": event.alert_id, "fingerprint": event.fingerprint, "rule": event.rule})
            pending.append(
                await self._alerts.send(
                    key=event.fingerprint.encode(), value=self._codecs.encode_alert(event), partition=partition
                )
            )
        if wait:
            for future in pending:
                await future
        self._exporter.record_alerts(events)

    async def send_fleet_alerts(self, events: list[AlertEvent], wait: bool = False) -> None:
        """Alert events the fleet stage decided (global and model budgets, circuits)."""
        await self.send_alerts(events, FLEET_ALERTS_PARTITION, wait)

    async def send_incidents(self, events: list[IncidentEvent], wait: bool = False) -> None:
        """Send incident events to the alerts topic (the fleet stage's partition), keyed by incident id."""
        pending = []
        for event in events:
            log.info("incident %s %s %s: %s", event.status, event.priority, event.incident_id, event.summary,
                     extra={"incident_id": event.incident_id})
            pending.append(await self._alerts.send(
                key=event.incident_id.encode(), value=self._codecs.encode_incident(event),
                partition=FLEET_ALERTS_PARTITION,
            ))
        if wait:
            for future in pending:
                await future
        self._exporter.record_incidents(events)

    async def send_fleet_summary(self, summary: bytes) -> Awaitable[Any]:
        """Queue a calls record's summary for the fleet stage; returns its delivery."""
        return await self._fleet.send(value=summary, partition=FLEET_PARTITION)

    async def send_alerts_to_fleet(self, events: list[AlertEvent]) -> Awaitable[Any] | None:
        """Alert events decided outside a calls record (timer, acknowledgement) go to the fleet stage, which
        groups them into incidents; returns the delivery to await, or None when there was nothing to send."""
        if not events:
            return None
        return await self._fleet.send(value=summarize_alerts_for_fleet(events), partition=FLEET_PARTITION)

    async def send_provider_states(self, transitions: list[CircuitTransition]) -> None:
        for transition in transitions:
            key = f"{transition.provider}/{transition.model}".encode()
            value = self._codecs.provider_state.encode(transition.to_record())
            await self._provider_state.send(key=key, value=value)
            self._exporter.record_circuit(transition)

    async def send_budget_states(self, records: list[tuple[bytes, dict[str, Any]]]) -> None:
        """Budget states for the SDKs' admission gates (compacted topic, keyed scope|period|key)."""
        if self._budget_state is None:
            return
        for key, record in records:
            await self._budget_state.send(key=key, value=self._codecs.budget_state.encode(record))

    async def send_routes(self, decisions: list[RouteDecision]) -> list[Awaitable[Any]]:
        """Route-back decisions (compacted topic keyed by service) for the SDK's ModelRoutes; nothing is sent
        unless rollback is turned on (the topic exists only then)."""
        if self._model_routes is None:
            return []
        pending = []
        for decision in decisions:
            log.warning("route back %s: %s -> %s (%s)", decision.service, decision.from_version,
                        decision.to_version, decision.reason)
            pending.append(await self._model_routes.send(key=decision.service.encode(),
                                                         value=self._route_codec.encode(decision.to_record())))
        return pending

    async def send_dead_letter(self, refused: Refused, topic: str, partition: int, offset: int) -> Awaitable[Any]:
        """Queue the refused record for the dead-letter topic; returns its delivery (await it before moving
        the source cursor past the record)."""
        log.warning("dead letter %s:%d@%d: %s %s", topic, partition, offset, refused.code, refused.reason)
        value = self._codecs.encode_dead_letter(refused, topic, partition, offset)
        delivery = await self._dead_letter.send(key=refused.code.encode(), value=value, partition=partition)
        self._exporter.record_dead_letter(refused.code)
        return delivery

    async def send_command(self, alert_id: str, action: str, actor: str, partition: int) -> Awaitable[Any]:
        """Queue an operator command for the worker owning ``partition`` of the commands topic."""
        return await self._commands.send(
            key=alert_id.encode(), value=self._codecs.encode_command(alert_id, action, actor), partition=partition,
        )

    async def send_command_to_fleet(self, alert_id: str, action: str, actor: str) -> Awaitable[Any]:
        """Pass an operator command on to the fleet stage (an incident or a fleet-wide alert, when the worker that
        owns the command's partition does not own the fleet stage); returns its delivery."""
        return await self._fleet.send(value=self._codecs.encode_command(alert_id, action, actor),
                                      partition=FLEET_PARTITION)
