"""The worker: a faust-streaming app whose agents feed decoded batches to per-partition engines.

Thin by design: decode -> core -> emit. Per-partition state lives in one raw-bytes faust table
(changelog-backed, keys ``<partition>|<namespace>/<key>``); fleet-wide state (global and model budgets,
provider circuits) in a one-partition table fed by the single-partition fleet topic. Engines are rebuilt
from the tables lazily after recovery.

Delivery is at-least-once and state is exactly-once: every state object is stamped with the offset it last
applied, so records replayed after a crash change nothing twice (docs/design.md explains why this beats
faust's per-partition transactions here: timers and HTTP commands produce outside any stream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from llmpulse.processors import configure, loaders
from llmpulse.processors.alert_directory import AlertDirectory
from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.core.circuit import CircuitTransition
from llmpulse.processors.core.engine import CURSOR_KEY, PartitionEngine
from llmpulse.processors.core.fleet import FleetEngine, summarize_alerts_for_fleet
from llmpulse.processors.core.guarding import GuardMonitor
from llmpulse.processors.core.incidents import IncidentEvent
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.decode import CallDecoder, Refused
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.records import RecordCodecs
from llmpulse.processors.registry_decode import registry_decoder
from llmpulse.processors.settings import ProcessorSettings

log = logging.getLogger("llmpulse.worker")
STATE_TABLE = "llmpulse-state"
FLEET_TABLE = "llmpulse-fleet"
FLEET_KEY = b"fleet"
FLEET_ALERTS_PARTITION = 0
TICK_SECONDS = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Worker:
    """Builds the faust app and owns everything its agents share."""

    def __init__(self, settings: ProcessorSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.config = configure.engine_config(settings)
        self.fleet_config = configure.fleet_config(settings)
        v = settings.validation
        auth = settings.schema_registry_auth.get_secret_value() if settings.schema_registry_auth else None
        self.decoder = CallDecoder(configure.validation_limits(settings), v.max_record_bytes, v.max_calls_per_batch,
                                   registry=registry_decoder(settings.schema_registry_url, auth))
        self.codecs = RecordCodecs(v.dead_letter_payload_bytes)
        self.pricer = Pricer(loaders.read_price_overrides(settings.prices_file))
        self.guard = GuardMonitor(self.config.guarding, loaders.read_injection_model())
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, settings.max_series_per_metric)
        self.exporter = MetricsExporter(self.metrics)
        self.engines: dict[int, PartitionEngine] = {}
        # Held by whoever changes and persists engine state (agents per group of records, the timer, commands):
        # a persist in the middle of a group would write a cursor past records whose output is not yet sent.
        self.state_lock = asyncio.Lock()
        self.fleet: FleetEngine | None = None
        self.directory = AlertDirectory(settings.bootstrap_servers, settings.topics.alerts)
        self.app = self._build_app()

    # ---- wiring ------------------------------------------------------------------------------------
    def _build_app(self) -> faust.App:
        s = self.settings
        partitions = s.topic_partitions
        app = faust.App(
            s.app_id,
            broker=f"kafka://{s.bootstrap_servers.replace(',', ';kafka://')}",
            processing_guarantee="at_least_once",
            store="memory://",
            datadir=str(s.data_dir),
            topic_partitions=partitions,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            web_host=s.web_host,
            web_port=s.web_port,
            web_in_thread=False,
            producer_max_request_size=16 * 1024 * 1024,
            consumer_max_fetch_size=16 * 1024 * 1024,
            stream_buffer_maxsize=64,
            autodiscover=False,
        )
        topics = s.topics
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.calls_topic = app.topic(topics.calls, partitions=partitions, **raw)
        self.alerts_topic = app.topic(topics.alerts, partitions=partitions, **raw)
        self.dead_letter_topic = app.topic(topics.dead_letter, partitions=partitions, **raw)
        self.commands_topic = app.topic(topics.alert_commands, partitions=partitions, **raw)
        self.provider_state_topic = app.topic(topics.provider_state, partitions=partitions, **raw)
        self.fleet_topic = app.topic(topics.fleet, partitions=1, **raw)
        self.state = app.Table(STATE_TABLE, default=None, key_type=bytes, value_type=bytes, partitions=partitions)
        self.fleet_state = app.Table(FLEET_TABLE, default=None, key_type=bytes, value_type=bytes, partitions=1)
        from llmpulse.processors.agents import calls, commands, fleet, ticks
        from llmpulse.processors.web import register_views
        from llmpulse.processors.web_report import register_report_views

        calls.register(self, app)
        fleet.register(self, app)
        commands.register(self, app)
        ticks.register(self, app)
        register_views(self, app)
        register_report_views(self, app)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_rebalance_complete.connect(self._commit_persisted_cursors)
        app.task(self._start_directory)
        return app

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == self.calls_topic.get_topic_name():
                self.engines.pop(tp.partition, None)
            elif tp.topic == self.fleet_topic.get_topic_name():
                self.fleet = None

    async def _commit_persisted_cursors(self, sender: Any, **_: Any) -> None:
        """Once tables are recovered and before faust seeks to the committed offsets, commit each assigned
        partition's persisted cursor: Kafka's commit may run ahead of persisted state (keyed_state.py says
        why), and resuming from it would skip records for good. A cursor behind the commit replays a few
        records; one ahead of it saves replaying what is already absorbed."""
        offsets = {}
        for tp in self.app.consumer.assignment():
            cursor = self.persisted_cursor(tp.topic, tp.partition)
            if cursor is not None:
                offsets[tp] = cursor
        if offsets:
            log.info("resuming from persisted cursors: %s",
                     ", ".join(f"{tp.topic}:{tp.partition}@{offset}" for tp, offset in sorted(offsets.items())))
            # faust's public commit only commits acked offsets; this is the consumer's own commit call.
            await self.app.consumer._commit(offsets)

    async def rewind(self, topic: faust.TopicT, partition: int, cursor: SourceCursor) -> None:
        """Seek a partition back to its cursor: records between it and what arrived never reached us."""
        name = topic.get_topic_name()
        offset = cursor.next_offset
        if offset is None:
            return
        log.warning("%s:%d: records from offset %d on never reached this worker; re-reading from there",
                    name, partition, offset)
        self.exporter.record_rewind(name)
        tp = self._assigned(name, partition)
        if tp is not None:
            await self.app.consumer.seek_wait({tp: offset})

    def persisted_cursor(self, topic: str, partition: int) -> int | None:
        """The next offset to process on a calls or fleet partition, as persisted with its state."""
        if topic == self.calls_topic.get_topic_name():
            blob = self.state.data.get(f"{partition}|{CURSOR_KEY}".encode())
            return SourceCursor.from_bytes(blob).next_offset if blob else None
        if topic == self.fleet_topic.get_topic_name():
            blob = self.fleet_state.data.get(FLEET_KEY)
            return FleetEngine.cursor_of(blob) if blob else None
        return None

    async def _start_directory(self) -> None:
        self.directory.start()

    # ---- shared by agents --------------------------------------------------------------------------------
    def engine_for(self, partition: int) -> PartitionEngine:
        """The partition's engine, rebuilt from the recovered state table on first use."""
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = PartitionEngine(partition, self.config, self.pricer, self.guard)
            prefix = f"{partition}|".encode()
            for key, blob in list(self.state.data.items()):
                if key.startswith(prefix) and blob is not None:
                    engine.restore(key[len(prefix):].decode(), blob)
        return engine

    def fleet_engine(self) -> FleetEngine:
        if self.fleet is None:
            blob = self.fleet_state.data.get(FLEET_KEY)
            self.fleet = FleetEngine.from_bytes(blob, self.fleet_config) if blob else FleetEngine(self.fleet_config)
        return self.fleet

    def owns(self, partition: int) -> bool:
        """Is this calls partition assigned to us right now? Records buffered before a rebalance may still
        reach the agent afterwards; processing them would rebuild an engine from a table the new owner is
        writing, and persisting it would overwrite that owner's totals."""
        return self._assigned(self.calls_topic.get_topic_name(), partition) is not None

    def owns_fleet(self) -> bool:
        return self._assigned(self.fleet_topic.get_topic_name(), 0) is not None

    def _assigned(self, topic: str, partition: int) -> Any:
        """The consumer's TopicPartition for (topic, partition) if it is assigned to us now, else None."""
        return next((tp for tp in self.app.consumer.assignment() if tp.topic == topic and tp.partition == partition),
                    None)

    def adopt_assigned_partitions(self) -> None:
        """Build engines for every assigned calls partition, so quiet partitions also tick and answer."""
        name = self.calls_topic.get_topic_name()
        for tp in self.app.consumer.assignment():
            if tp.topic == name and tp.partition not in self.engines:
                self.engine_for(tp.partition)

    def persist(self, engine: PartitionEngine) -> None:
        """Write the engine's changed state to the table and its changelog (tombstones for deletions)."""
        for key, blob in engine.drain_state():
            table_key = f"{engine.partition}|{key}".encode()
            if blob is None:
                self.state.data.pop(table_key, None)
            else:
                self.state.data[table_key] = blob
            self.state.send_changelog(engine.partition, table_key, blob, "raw", "raw")

    def persist_fleet(self) -> None:
        if self.fleet is not None:
            blob = self.fleet.to_bytes()
            self.fleet_state.data[FLEET_KEY] = blob
            self.fleet_state.send_changelog(0, FLEET_KEY, blob, "raw", "raw")

    async def emit_alerts(self, events: list[AlertEvent], partition: int, wait: bool = False) -> None:
        """Send alert events to the partition they came from; ``wait`` awaits the broker's ack."""
        pending = []
        for event in events:
            log.info("alert %s %s %s: %s", event.status, event.severity, event.rule, event.summary)
            pending.append(
                await self.alerts_topic.send(
                    key=event.fingerprint.encode(), value=self.codecs.encode_alert(event), partition=partition
                )
            )
        if wait:
            for future in pending:
                await future
        self.exporter.record_alerts(events)

    async def emit_incidents(self, events: list[IncidentEvent], wait: bool = False) -> None:
        """Send incident events to the alerts topic (the fleet stage's partition), keyed by incident id."""
        pending = []
        for event in events:
            log.info("incident %s %s %s: %s", event.status, event.priority, event.incident_id, event.summary)
            pending.append(await self.alerts_topic.send(
                key=event.incident_id.encode(), value=self.codecs.encode_incident(event),
                partition=FLEET_ALERTS_PARTITION,
            ))
        if wait:
            for future in pending:
                await future
        self.exporter.record_incidents(events)

    async def send_alerts_to_fleet(self, events: list[AlertEvent]) -> Awaitable[Any] | None:
        """Alert events decided outside a calls record (timer, acknowledgement) go to the fleet stage, which
        groups them into incidents; returns the delivery to await, or None when there was nothing to send."""
        if not events:
            return None
        return await self.fleet_topic.send(value=summarize_alerts_for_fleet(events), partition=0)

    async def emit_provider_states(self, transitions: list[CircuitTransition]) -> None:
        for transition in transitions:
            key = f"{transition.provider}/{transition.model}".encode()
            value = self.codecs.provider_state.encode(transition.to_record())
            await self.provider_state_topic.send(key=key, value=value)
            self.exporter.record_circuit(transition)

    async def dead_letter(self, refused: Refused, topic: str, partition: int, offset: int) -> Awaitable[Any]:
        """Queue the refused record for the dead-letter topic; returns its delivery (await it before moving
        the source cursor past the record)."""
        log.warning("dead letter %s:%d@%d: %s %s", topic, partition, offset, refused.code, refused.reason)
        value = self.codecs.encode_dead_letter(refused, topic, partition, offset)
        delivery = await self.dead_letter_topic.send(key=refused.code.encode(), value=value, partition=partition)
        self.exporter.record_dead_letter(refused.code)
        return delivery

    def is_ready(self) -> bool:
        """Assigned partitions are recovered. faust sets ``recovery.completed`` once and never clears it, so a
        later rebalance's recovery is only visible as ``in_recovery``: an engine built from the table during it
        would miss state and then overwrite the changelog with short totals."""
        app = self.app
        recovery = app.tables.recovery
        return bool(
            app.consumer is not None and not app.rebalancing and not recovery.in_recovery
            and recovery.completed.is_set()
        )
