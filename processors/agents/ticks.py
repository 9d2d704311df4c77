"""Timer: evaluate windows without new data (quiet series clear, alerts resolve), refresh gauges."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

if TYPE_CHECKING:
    from llmpulse.processors.app import Worker


def register(worker: Worker, app: faust.App) -> None:
    from llmpulse.processors.app import FLEET_ALERTS_PARTITION, TICK_SECONDS, now_ms

    @app.timer(interval=TICK_SECONDS, name="llmpulse.tick")
    async def tick() -> None:
        now = now_ms()
        async with worker.state_lock:  # never persist an engine while an agent is halfway through a group
            if worker.is_ready():
                worker.adopt_assigned_partitions()
            for partition, engine in list(worker.engines.items()):
                events = engine.tick(now)
                worker.persist(engine)
                await worker.emit_alerts(events, partition)
            if worker.fleet is not None and worker.owns_fleet():
                events = worker.fleet.tick(now)
                if events:
                    worker.persist_fleet()
                    await worker.emit_alerts(events, FLEET_ALERTS_PARTITION)
        worker.exporter.refresh(list(worker.engines.values()), worker.fleet, now)
        worker.exporter.record_lag(app.monitor.tp_end_offsets, app.monitor.tp_read_offsets,
                                   {(tp.topic, tp.partition) for tp in app.consumer.assignment()})
        worker.metrics.ready.set(1 if worker.is_ready() else 0)
