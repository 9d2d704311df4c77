"""One partition's analytics: every monitor's state, the alert policy, and what a batch changes.

The faust agent hands each decoded batch to the engine of its source partition together with the record's
offset; the engine updates state (skipping what that offset already changed, see keyed_state.py) and
returns alert events and per-series totals. State leaves through ``drain_state`` as (store key, bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmpulse.processors.core.alert_policy import AlertConfig, AlertEvent, AlertPolicy, Observation
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.keyed_state import KeyedState
from llmpulse.processors.core.latency import QUANTILES, LatencyConfig, LatencyMonitor, _window_label
from llmpulse.processors.core.slots import series_key, series_parts
from llmpulse.processors.core.summary import SeriesTotals, summarize

POLICY_KEY = "policy"


class _PolicyBlob:
    """Adapter giving the alert policy the to_bytes/from_bytes shape KeyedState persists."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy

    def to_bytes(self) -> bytes:
        return json.dumps(self.policy.to_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class EngineConfig:
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)


@dataclass(slots=True)
class BatchOutcome:
    alerts: list[AlertEvent]
    totals: list[SeriesTotals]
    accepted: int


class PartitionEngine:
    """All state derived from one source partition."""

    def __init__(self, partition: int, config: EngineConfig) -> None:
        self.partition = partition
        self.config = config
        self.latency = LatencyMonitor(config.latency)
        self._policy = KeyedState(
            "alerts",
            lambda _key: _PolicyBlob(AlertPolicy(config.alerts)),
            lambda blob: _PolicyBlob(AlertPolicy.from_dict(json.loads(blob), config.alerts)),
        )

    # ---- stream ------------------------------------------------------------------------------------
    def process(self, calls: CallColumns, offset: int, now_ms: int) -> BatchOutcome:
        """Absorb one record's calls. Decisions use the batch's event time, so a replay decides the same."""
        event_ms = min(int(calls.timestamp_ms.max()), now_ms)
        keys, inverse = calls.group_by("service", "model", "provider")
        series = [series_key(key) for key in keys]
        self.latency.update(series, inverse, calls.timestamp_ms, calls.latency_ms, calls.ttft_ms, offset, now_ms)
        observations = [obs for s in series for obs in self.latency.observe(s, event_ms)]
        alerts = self._decide(observations, offset, event_ms)
        totals = summarize(calls, keys, inverse, calls.cost_micros)  # type: ignore[arg-type]
        return BatchOutcome(alerts=alerts, totals=totals, accepted=len(calls))

    def tick(self, now_ms: int) -> list[AlertEvent]:
        """Periodic evaluation without new data: quiet series clear, held alerts resolve, old slots go."""
        self.latency.evict(now_ms)
        policy = self.policy
        events = policy.observe_many(obs for s in self.latency.series() for obs in self.latency.observe(s, now_ms))
        events += policy.tick(now_ms)
        if events:
            self._policy.touch(POLICY_KEY)
        return events

    def acknowledge(self, alert_id: str, actor: str, now_ms: int) -> AlertEvent | None:
        """Acknowledging is idempotent by nature, so it needs no offset stamp (and has no calls offset)."""
        event = self.policy.acknowledge(alert_id, actor, now_ms)
        if event is not None:
            self._policy.touch(POLICY_KEY)
        return event

    def _decide(self, observations: list[Observation], offset: int, now_ms: int) -> list[AlertEvent]:
        blob = self._policy.for_update(POLICY_KEY, offset)
        if blob is None:  # replayed record: its alerts were already decided and emitted
            return []
        return blob.policy.observe_many(observations)

    # ---- views ---------------------------------------------------------------------------------------
    @property
    def policy(self) -> AlertPolicy:
        return self._policy.get_or_create(POLICY_KEY).policy

    def summary(self, now_ms: int) -> list[dict[str, Any]]:
        """Per-series latency quantiles over every configured window (for /api/metrics and gauges)."""
        rows = []
        for s in self.latency.series():
            row: dict[str, Any] = dict(zip(("service", "model", "provider"), series_parts(s), strict=True))
            for window_s in self.config.latency.windows_s:
                count, values = self.latency.quantiles(s, window_s, now_ms)
                quantiles = {
                    f"p{int(q * 100)}": (None if np.isnan(v) else float(v))
                    for q, v in zip(QUANTILES, values, strict=True)
                }
                row[_window_label(window_s)] = {"count": count, **quantiles}
            rows.append(row)
        return rows

    # ---- persistence -------------------------------------------------------------------------------------
    def _states(self) -> list[KeyedState]:  # type: ignore[type-arg]
        return [*self.latency.states(), self._policy]

    def drain_state(self) -> list[tuple[str, bytes | None]]:
        return [(f"{state.namespace}/{key}", blob) for state in self._states() for key, blob in state.drain()]

    def restore(self, store_key: str, blob: bytes) -> None:
        namespace, _, key = store_key.partition("/")
        if namespace == self._policy.namespace:
            self._policy.restore(key, blob)
        elif not self.latency.restore(namespace, key, blob):
            raise KeyError(f"unknown state namespace {namespace!r}")
