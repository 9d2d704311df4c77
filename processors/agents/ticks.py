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
                # on the broker before the state saying they were decided: a crash repeats them, never loses one
                await worker.emit_alerts(events, partition, wait=True)
                delivery = await worker.send_alerts_to_fleet(events)
                if delivery is not None:
                    await delivery
                worker.persist(engine)
            if worker.fleet is not None and worker.owns_fleet():
                outcome = worker.fleet.tick(now)
                if outcome.alerts or outcome.incidents:
                    await worker.emit_alerts(outcome.alerts, FLEET_ALERTS_PARTITION, wait=True)
                    await worker.emit_incidents(outcome.incidents, wait=True)
                    worker.persist_fleet()
        worker.exporter.refresh(list(worker.engines.values()), worker.fleet, now)
        worker.exporter.record_lag(app.monitor.tp_end_offsets, app.monitor.tp_read_offsets,
                                   {(tp.topic, tp.partition) for tp in app.consumer.assignment()})
        worker.metrics.ready.set(1 if worker.is_ready() else 0)
