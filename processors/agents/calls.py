"""Agent: llm-calls records -> engine of each record's partition -> alerts, dead letters, metrics, state.

Records are taken in small groups (``take_events``): every record is processed, then alerts are sent and
their delivery awaited, then the changed state of every touched engine is written once for the group, and
only then does faust ack the records (and later commit their offsets, after flushing the producer). A crash
anywhere replays the group: state objects skip what they already absorbed (offset stamps) and an alert
decided again carries the same alert_id, so consumers see at most a repeat, never a loss.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import faust

from llmpulse.processors.core.alert_policy import AlertEvent
from llmpulse.processors.decode import Refused

if TYPE_CHECKING:
    from llmpulse.processors.app import Worker

log = logging.getLogger("llmpulse.worker.calls")
TAKE_MAX_RECORDS = 64
TAKE_WITHIN_S = 0.05


def register(worker: Worker, app: faust.App) -> None:
    from llmpulse.processors.app import now_ms

    topic_name = worker.calls_topic.get_topic_name()

    @app.agent(worker.calls_topic, name="llmpulse.calls")
    async def process_calls(stream: faust.StreamT) -> None:
        async for events in stream.take_events(TAKE_MAX_RECORDS, within=TAKE_WITHIN_S):
            touched: set[int] = set()
            alerts: list[tuple[list[AlertEvent], int]] = []
            for event in events:
                message = event.message
                if not worker.owns(message.partition):
                    continue  # revoked while buffered: the new owner reprocesses it from the committed offset
                value = event.value
                if not value:
                    refused = [Refused("empty", "record has no value (tombstone or empty bytes)", b"")]
                    calls = None
                else:
                    calls, refused = worker.decoder.decode(value, now_ms())
                for item in refused:
                    await worker.dead_letter(item, topic_name, message.partition, message.offset)
                if calls is None:
                    continue
                try:
                    engine = worker.engine_for(message.partition)
                    outcome = engine.process(calls, message.offset, now_ms())
                except Exception as exc:  # a bug must cost one record (kept on the dead-letter topic), not the agent
                    log.exception("processing %s:%d@%d failed", topic_name, message.partition, message.offset)
                    reason = f"processing failed: {type(exc).__name__}: {exc}"
                    await worker.dead_letter(Refused("internal_error", reason, value or b""), topic_name,
                                             message.partition, message.offset)
                    continue
                worker.exporter.record_batch(outcome.totals, outcome.accepted)
                worker.exporter.record_guard(outcome.guard, calls)
                worker.exporter.record_unpriced(outcome.unpriced_models)
                await worker.fleet_topic.send(value=outcome.fleet_summary, partition=0)
                touched.add(message.partition)
                if outcome.alerts:
                    alerts.append((outcome.alerts, message.partition))
            for decided, partition in alerts:
                await worker.emit_alerts(decided, partition, wait=True)
            for partition in touched:
                if worker.owns(partition):
                    worker.persist(worker.engine_for(partition))
