"""Timer: evaluate windows without new data (quiet series clear, alerts resolve); lag, readiness, state-write and
stall gauges. The window gauges are computed when scraped (web.py ``/metrics``), not here: between two scrapes (15 s in
deploy/prometheus) nobody reads them, and at 10,000 series a computation takes ~0.3 s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import faust

from llmpulse.processors.clock import TICK_SECONDS, now_ms
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import EngineStore
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.ownership import PartitionOwnership


class StateWrites(Protocol):
    """What the timer reports of the state writer (changelog_writer.py)."""

    written: int

    def pending(self) -> int: ...


class Stalls(Protocol):
    """What the timer reports of the session fence (session_fence.py)."""

    stalls: int

    def in_doubt(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Ticker:
    store: EngineStore
    emitter: Emitter
    ownership: PartitionOwnership
    exporter: MetricsExporter
    state_writes: StateWrites
    fence: Stalls

    def register(self, app: faust.App) -> None:
        @app.timer(interval=TICK_SECONDS, name="llmpulse.tick")
        async def tick() -> None:
            now = now_ms()
            async with self.store.lock:  # never persist an engine while an agent is halfway through a group
                await self.evaluate(now)
            self.exporter.record_lag(app.monitor.tp_end_offsets, app.monitor.tp_read_offsets,
                                     self.ownership.assigned())
            self.exporter.record_ready(self.ownership.ready(), self.ownership.recovery_left())
            self.exporter.record_state_writes(self.state_writes.written, self.state_writes.pending())
            in_doubt = self.fence.in_doubt()  # first: it notes a stall the fence's thread has not seen yet
            self.exporter.record_stalls(self.fence.stalls, in_doubt)

    async def evaluate(self, now: int) -> None:
        store, emitter, ownership = self.store, self.emitter, self.ownership
        if ownership.ready():
            for lane in ownership.lanes():
                store.adopt(ownership.assigned_calls(lane), lane)
        for engine in store.all_engines():
            if not ownership.owns(engine.partition, engine.lane):
                continue  # revoked, or this worker stood still past its session (session_fence.py): not ours to act
            events = engine.tick(now)
            # on the broker before the state saying they were decided: a crash repeats them, never loses one
            await emitter.send_alerts(events, engine.partition, wait=True)
            delivery = await emitter.send_alerts_to_fleet(events)
            if delivery is not None:
                await delivery
            for route in await emitter.send_routes(engine.drain_timer_routes()):
                await route
            store.persist(engine, now)
        fleet = store.loaded_fleet()
        if fleet is not None and ownership.owns_fleet():
            outcome = fleet.tick(now)
            if outcome.alerts or outcome.incidents or outcome.transitions:
                await emitter.send_fleet_alerts(outcome.alerts, wait=True)
                await emitter.send_incidents(outcome.incidents, wait=True)
                await emitter.send_provider_states(outcome.transitions)
                store.persist_fleet(now)
            else:  # what summaries changed since the last checkpoint
                store.persist_fleet_changes(now)
