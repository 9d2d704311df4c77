"""The worker: a faust-streaming app whose agents feed decoded batches to per-partition engines.

Thin by design: decode -> core -> emit. State lives in one raw-bytes faust table (changelog-backed) whose
keys are ``<partition>|<namespace>/<key>``; each engine is rebuilt from it lazily after recovery.
Delivery is at-least-once and state is exactly-once: every state object is stamped with the offset it last
applied, so records replayed after a crash change nothing twice (see agents/calls.py and docs/design.md for
why this beats faust's per-partition transactions here: timers and HTTP commands produce outside a stream).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from llmpulse.processors.alert_directory import AlertDirectory
from llmpulse.processors.core.alert_policy import AlertConfig, AlertEvent
from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.latency import LatencyConfig
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.decode import CallDecoder, Refused
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.records import RecordCodecs
from llmpulse.processors.settings import ProcessorSettings

log = logging.getLogger("llmpulse.worker")
STATE_TABLE = "llmpulse-state"
TICK_SECONDS = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


def engine_config(settings: ProcessorSettings) -> EngineConfig:
    lat = settings.latency
    return EngineConfig(
        latency=LatencyConfig(
            p95_warning_s=lat.p95_warning_s,
            p99_critical_s=lat.p99_critical_s,
            alert_window_s=lat.alert_window_s,
            windows_s=lat.windows_s,
            interval_s=lat.interval_s,
            min_samples=lat.min_samples,
            relative_accuracy=lat.relative_accuracy,
        ),
        alerts=AlertConfig(
            cooldown_ms=settings.alerts.cooldown_s * 1000, resolve_hold_ms=settings.alerts.resolve_hold_s * 1000
        ),
    )


class Worker:
    """Builds the faust app and owns everything its agents share."""

    def __init__(self, settings: ProcessorSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.config = engine_config(settings)
        v = settings.validation
        limits = Limits(
            max_name_chars=v.max_name_chars, max_text_chars=v.max_text_chars, max_labels=v.max_labels,
            max_label_chars=v.max_label_chars, max_latency_ms=v.max_latency_ms, max_tokens=v.max_tokens,
            max_future_skew_s=v.max_future_skew_s, max_age_s=v.max_age_s,
        )
        self.decoder = CallDecoder(limits, v.max_record_bytes, v.max_calls_per_batch)
        self.codecs = RecordCodecs(v.dead_letter_payload_bytes)
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, settings.max_series_per_metric)
        self.exporter = MetricsExporter(self.metrics)
        self.engines: dict[int, PartitionEngine] = {}
        self.directory = AlertDirectory(settings.bootstrap_servers, settings.topics.alerts, self.codecs.alert)
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
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw", "partitions": partitions}
        self.calls_topic = app.topic(topics.calls, **raw)
        self.alerts_topic = app.topic(topics.alerts, **raw)
        self.dead_letter_topic = app.topic(topics.dead_letter, **raw)
        self.commands_topic = app.topic(topics.alert_commands, **raw)
        self.state = app.Table(STATE_TABLE, default=None, key_type=bytes, value_type=bytes, partitions=partitions)
        from llmpulse.processors.agents import calls, commands, ticks
        from llmpulse.processors.web import register_views

        calls.register(self, app)
        commands.register(self, app)
        ticks.register(self, app)
        register_views(self, app)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.task(self._start_directory)
        return app

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        for tp in revoked:
            if tp.topic == self.calls_topic.get_topic_name():
                self.engines.pop(tp.partition, None)

    async def _start_directory(self) -> None:
        self.directory.start()

    # ---- shared by agents --------------------------------------------------------------------------------
    def engine_for(self, partition: int) -> PartitionEngine:
        """The partition's engine, rebuilt from the recovered state table on first use."""
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = PartitionEngine(partition, self.config)
            prefix = f"{partition}|".encode()
            for key, blob in list(self.state.data.items()):
                if key.startswith(prefix) and blob is not None:
                    engine.restore(key[len(prefix):].decode(), blob)
        return engine

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

    async def dead_letter(self, refused: Refused, topic: str, partition: int, offset: int) -> None:
        log.warning("dead letter %s:%d@%d: %s %s", topic, partition, offset, refused.code, refused.reason)
        value = self.codecs.encode_dead_letter(refused, topic, partition, offset)
        await self.dead_letter_topic.send(key=refused.code.encode(), value=value, partition=partition)
        self.exporter.record_dead_letter(refused.code)

    def is_ready(self) -> bool:
        app = self.app
        recovery = app.tables.recovery
        return bool(app.consumer is not None and not app.rebalancing and recovery.completed.is_set())
