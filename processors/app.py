"""The worker: a faust-streaming app whose agents feed decoded batches to per-partition engines.

Thin by design: decode -> core -> emit. ``Worker`` is the composition root: it builds the parts and hands
each agent and view only the ones it uses.

- ``wiring.wire``: the faust app, its topics and its tables.
- ``EngineStore``: the engine of each calls partition and the fleet engine, restored from and persisted to
  the tables, and the state lock.
- ``Emitter``: alerts, incidents, provider state, dead letters, fleet summaries, commands.
- ``PartitionOwnership``: assignment, readiness, rewinds and the persisted cursors committed on assignment.

Delivery is at-least-once and state is exactly-once: every state object is stamped with the offset it last
applied, so records replayed after a crash change nothing twice (docs/design.md explains why this beats
faust's per-partition transactions here: timers and HTTP commands produce outside any stream).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from prometheus_client import CollectorRegistry

from llmpulse import schemas
from llmpulse.connection import client_config
from llmpulse.processors import configure, loaders
from llmpulse.processors.agents.calls import CallsAgent
from llmpulse.processors.agents.commands import CommandsAgent
from llmpulse.processors.agents.fleet import FleetAgent
from llmpulse.processors.agents.ticks import Ticker
from llmpulse.processors.alert_directory import AlertDirectory
from llmpulse.processors.changelog_writer import ChangelogFailed, ChangelogWriter
from llmpulse.processors.core.engine import PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import OTLP_LANE, EngineStore
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.ownership import PartitionOwnership
from llmpulse.processors.session_fence import SessionFence
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.web import ApiParts, register_views
from llmpulse.processors.web_report import Reports, register_report_views
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.processors.wire.feedback import FeedbackDecoder
from llmpulse.processors.wire.otlp import OtlpDecoder
from llmpulse.processors.wire.outputs import RecordCodecs
from llmpulse.processors.wire.registry import registry_decoder
from llmpulse.processors.wiring import wire
from llmpulse.processors.writer_schemas import WriterSchemaCatalog

__all__ = ["Worker"]

log = logging.getLogger("llmpulse.worker")
SHUTDOWN_HAND_OVER_S = 30.0  # a stop waits at most this long for the state lock and the broker
# After the state writer failed, the process exits by itself if the graceful stop has not ended it this much later:
# faust's stop waits for its streams to drain, and a stream sought back during the crash never did (seen about once
# in ten runs of tests/reliability/test_state_write_failure.py: the worker hung in "Wait for streams" for good).
FAILED_STOP_EXIT_S = SHUTDOWN_HAND_OVER_S + 15.0
FAILED_STOP_EXIT_CODE = 70  # EX_SOFTWARE


class Worker:
    """Builds the parts and the faust app (``app``); what an agent or a view may touch is what it is given."""

    def __init__(self, settings: ProcessorSettings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        config = configure.engine_config(settings)
        v = settings.validation
        auth = settings.schema_registry_auth.get_secret_value() if settings.schema_registry_auth else None
        decoder = CallDecoder(configure.validation_limits(settings), v.max_record_bytes, v.max_calls_per_batch,
                              registry=registry_decoder(settings.schema_registry_url, auth))
        codecs = RecordCodecs(v.dead_letter_payload_bytes)
        pricer = Pricer(loaders.read_price_overrides(settings.prices_file))
        pricer.load_catalogue()  # before the first record, and before the startup heap is frozen (startup.py)
        guard = GuardMonitor(config.guarding, loaders.read_injection_model())
        health = configure.health_config(settings)
        exporter = MetricsExporter(WorkerMetrics(self.registry, settings.max_series_per_metric), health)

        wiring = wire(settings)
        self.app = app = wiring.app
        # the calls engines' state records go through librdkafka (changelog_writer.py says why)
        self.changelog = ChangelogWriter(
            {**client_config(settings.bootstrap_servers, settings.kafka, "llmpulse.worker.changelog"),
             "client.id": f"{settings.app_id}-state"},
            wiring.state.changelog_topic.get_topic_name(), self._changelog_failed)
        # a stall past the consumer session may have cost the worker its partitions unnoticed: in doubt, it owns
        # none and writes no state until the group says (session_fence.py)
        self.fence = fence = SessionFence(app.conf.broker_session_timeout, lambda: app.consumer_generation_id)
        self.store = store = EngineStore(
            wiring.state, wiring.fleet_state, lambda partition: PartitionEngine(partition, config, pricer, guard),
            configure.fleet_config(settings), checkpoint_ms=round(settings.state_checkpoint_s * 1000),
            fleet_checkpoint_ms=round(settings.fleet_checkpoint_s * 1000), state_log=self.changelog,
            ledger_checkpoint_ms=round(settings.ledger_checkpoint_s * 1000),
            may_write=lambda: not fence.in_doubt(),
        )
        self.emitter = emitter = Emitter(
            alerts=wiring.alerts, dead_letter=wiring.dead_letter, commands=wiring.commands,
            provider_state=wiring.provider_state, budget_state=wiring.budget_state, fleet=wiring.fleet, codecs=codecs,
            exporter=exporter, model_routes=wiring.model_routes,
        )
        self.ownership = ownership = PartitionOwnership(
            app, wiring.calls.get_topic_name(), wiring.fleet.get_topic_name(), store, exporter.record_rewind,
            otlp_topic=wiring.otlp.get_topic_name() if wiring.otlp is not None else None, in_doubt=fence.in_doubt,
            bulk_left=lambda: wiring.changelog_reader.left,
        )
        self.directory = directory = AlertDirectory(settings.bootstrap_servers, settings.topics.alerts,
                                                    settings.kafka)

        feedback = FeedbackDecoder()
        self.writer_schemas = WriterSchemaCatalog(
            settings.bootstrap_servers, settings.topics.schemas, settings.kafka,
            {schemas.LLM_CALL_BATCH: [decoder.batch_codec], schemas.LLM_CALL: [decoder.call_codec],
             schemas.FEEDBACK: [feedback.codec]})
        CallsAgent(store, emitter, ownership, decoder, exporter, feedback=feedback,
                   writer_schemas=self.writer_schemas).register(app, wiring.calls)
        if wiring.otlp is not None:  # OpenTelemetry GenAI spans: same path, engines and cursors of their own
            spans = OtlpDecoder(configure.validation_limits(settings), v.max_record_bytes, settings.otlp.encoding,
                                configure.span_mapping(settings), on_skipped=exporter.record_skipped_spans)
            CallsAgent(store, emitter, ownership, spans, exporter, lane=OTLP_LANE).register(app, wiring.otlp)
        FleetAgent(store, emitter, ownership).register(app, wiring.fleet)
        CommandsAgent(store, emitter, ownership, codecs.command).register(app, wiring.commands)
        Ticker(store, emitter, ownership, exporter, self.changelog, fence).register(app)
        reports = Reports(store, pricer.rate, directory, health, settings.kpis)
        register_views(app, ApiParts(engines=store, ownership=ownership, directory=directory, emitter=emitter,
                                     exporter=exporter, registry=self.registry, reports=reports,
                                     api_token=settings.api_token))
        register_report_views(app, reports, self.registry, settings.max_series_per_metric)
        # Engines of revoked partitions are dropped; on every assignment, once the tables are recovered and
        # before faust seeks, the persisted source cursors are committed (ownership.py says why).
        app.on_partitions_revoked.connect(ownership.on_revoked)
        app.on_rebalance_complete.connect(ownership.commit_persisted_cursors)
        app.on_before_shutdown.connect(self._close_changelog)
        app.task(self._start_fence)
        app.on_before_shutdown.connect(self._stop_fence)
        app.task(self._start_directory)
        app.task(self._read_writer_schemas)

    def _changelog_failed(self, failure: ChangelogFailed) -> None:
        """From the writer's delivery thread: stop the worker (its state can no longer be written in order), and
        make sure it stops: nothing a longer stop could do would be written anyway, and the next start replays
        from the cursors on the broker."""
        self.app.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.app.crash(failure)))
        timer = threading.Timer(FAILED_STOP_EXIT_S, _exit_after_failed_stop)
        timer.daemon = True
        timer.start()

    async def _close_changelog(self, _sender: object, **_: object) -> None:
        try:  # what checkpoints left unwritten, before the writer closes; a stop never waits on it for long
            await asyncio.wait_for(self.ownership.hand_over_all(), SHUTDOWN_HAND_OVER_S)
        except (TimeoutError, ChangelogFailed) as exc:
            log.warning("partitions not handed over at shutdown (%s); the next start replays from the cursors it "
                        "finds", str(exc) or "timed out")
        left = await asyncio.get_running_loop().run_in_executor(None, self.changelog.close)
        if left:
            log.warning("%d state records not delivered at shutdown; the next start replays from the cursors it "
                        "finds", left)

    async def _start_fence(self) -> None:
        self.fence.start()

    async def _stop_fence(self, _sender: object, **_: object) -> None:
        self.fence.stop()

    async def _start_directory(self) -> None:
        self.directory.start()

    async def _read_writer_schemas(self) -> None:
        """The writer schemas SDKs announced so far, before records that need them are likely to arrive."""
        await asyncio.get_running_loop().run_in_executor(None, self.writer_schemas.read_to_end)


def _exit_after_failed_stop() -> None:
    log.critical("the worker is still stopping %.0f s after its state writer failed; exiting now (the next start "
                 "replays from the persisted cursors)", FAILED_STOP_EXIT_S)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(FAILED_STOP_EXIT_CODE)
