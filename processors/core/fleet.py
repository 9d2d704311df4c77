"""Fleet-wide state that no single calls partition can own: global and per-model budgets, the month-end
projection, provider circuits, and incidents (incidents.py). Every calls partition sends a compact summary
of each record to one single-partition topic, with the alert events that record decided; alert events decided
outside a record (timer, acknowledgements) travel alone (``summarize_alerts_for_fleet``). This engine applies
them in order and groups every alert of the fleet, its own included, into incidents. Call outcomes reach the
circuits in event-time order across partitions (outcome_order.py), not in the order the partitions' summaries
happen to arrive.

Exactly-once: each summary carries its source (partition, offset); the engine keeps the highest offset
applied per source partition inside the same state blob as the ledger and circuits, so a summary sent twice
(a calls partition replayed after a crash) or read twice (this stage replayed) is applied once. Alert events
alone carry no offset: incidents merge them idempotently (a repeat changes nothing).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmpulse.circuit_breaker import BreakerConfig
from llmpulse.processors.core.alert_policy import AlertConfig, AlertEvent, AlertPolicy
from llmpulse.processors.core.budget_state import BudgetStatePublisher
from llmpulse.processors.core.circuit import CircuitTransition, StreamCircuitTracker
from llmpulse.processors.core.columns import OK, CallColumns
from llmpulse.processors.core.counter_bytes import pack_deltas, unpack_deltas
from llmpulse.processors.core.grouping import first_of_runs, unique_inverse
from llmpulse.processors.core.incidents import IncidentConfig, IncidentEvent, IncidentManager
from llmpulse.processors.core.keyed_state import SourceCursor
from llmpulse.processors.core.ledger import BudgetLedger, BudgetLimits, PeriodLimits, highest_crossings
from llmpulse.processors.core.outcome_order import OutcomeOrder, Outcomes

_HOUR_MS = 3_600_000
_OK_ROWS_FOR_HEALTHY_KEYS = 20  # enough successes to close a half-open breaker and fill its rate window


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    limits: BudgetLimits = field(default_factory=BudgetLimits)  # the scopes judged here (fleet_scopes)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)  # one circuit per provider/model
    alerts: AlertConfig = field(default_factory=AlertConfig)  # the lifecycle of this stage's own alerts
    incidents: IncidentConfig = field(default_factory=IncidentConfig)  # grouping every alert of the fleet


def summarize_for_fleet(calls: CallColumns, cost_micros: np.ndarray, partition: int, offset: int,
                        alerts: list[AlertEvent] | None = None, by_user: bool = False) -> bytes:
    """The fleet summary of one run of records: spend per (model, service, hour), or per (model, service, user,
    hour) with ``by_user`` (user budgets configured), as ``[model, max ts, cost, service, user]``; ordered outcomes
    per provider/model as ``[provider, model, timestamps, "1"/"0" per call]`` (the timestamps as base64 of
    pack_deltas: a list of numbers made the summary ~15 bytes a call, its JSON most of the cost of writing and
    reading it), and the alert events the run decided. Groups come from one sort each, not a mask per group: a run
    can hold thousands of series."""
    spend: list[list[Any]] = []
    priced = np.flatnonzero(cost_micros >= 0)
    if priced.size:
        keys, inverse = calls.group_by("model", "service", *(("user_hash",) if by_user else ()))
        hours, hour_of = unique_inverse(calls.timestamp_ms[priced] // _HOUR_MS)
        cell = inverse[priced] * len(hours) + hour_of  # (group, hour), ordered as group then hour
        order = np.argsort(cell, kind="stable")
        cell = cell[order]
        starts = np.flatnonzero(first_of_runs(cell))
        cell = cell[starts]
        latest = np.maximum.reduceat(calls.timestamp_ms[priced][order], starts).tolist()
        cost = np.add.reduceat(cost_micros[priced][order], starts).tolist()
        for i, g in enumerate((cell // len(hours)).tolist()):
            model, service, user = keys[g][0], keys[g][1], keys[g][2] if by_user else None
            spend.append([model, int(latest[i]), int(cost[i]), service, user])
    outcomes: list[list[Any]] = []
    if len(calls):
        keys, inverse = calls.group_by("provider", "model")
        order = np.argsort(inverse, kind="stable")  # each key's calls, in call order
        bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1)).tolist()
        ok_all, ts_all = calls.status[order] == OK, calls.timestamp_ms[order]
        for g, (provider, model) in enumerate(keys):
            ok, ts = ok_all[bounds[g]:bounds[g + 1]], ts_all[bounds[g]:bounds[g + 1]]
            if ok.all():  # healthy keys travel as a handful of successes, not one row per call
                ts, ok = ts[-_OK_ROWS_FOR_HEALTHY_KEYS:], ok[-_OK_ROWS_FOR_HEALTHY_KEYS:]
            outcomes.append([provider, model, base64.b64encode(pack_deltas(ts)).decode("ascii"),
                             (ok.view(np.uint8) + 48).tobytes().decode()])  # "1"/"0"
    return json.dumps({"p": partition, "o": offset, "spend": spend, "outcomes": outcomes,
                       "alerts": [event.to_record() for event in alerts or ()]}, separators=(",", ":")).encode()


def summarize_alerts_for_fleet(alerts: list[AlertEvent]) -> bytes:
    """Alert events decided outside a calls record (timer resolves, acknowledgements), for the incidents."""
    return json.dumps({"alerts": [event.to_record() for event in alerts]}, separators=(",", ":")).encode()


@dataclass(slots=True)
class FleetOutcome:
    alerts: list[AlertEvent]
    transitions: list[CircuitTransition]
    applied: bool
    incidents: list[IncidentEvent] = field(default_factory=list)


def fleet_scopes(limits: BudgetLimits) -> tuple[str, ...]:
    """Global and model budgets always; service and user ones too when limited, for the budget-state topic. A
    service's alerts stay with its calls partition, which sees all of its calls first; a user calls any service,
    so only this stage sees all of a user's spend, and alerts on it."""
    extra = tuple(scope for scope in ("service", "user") if getattr(limits, f"{scope}_limits") != PeriodLimits())
    return ("global", "model", *extra)


_ALERTING_SCOPES = ("global", "model", "user")


class FleetEngine:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.ledger = BudgetLedger(config.limits, scopes=fleet_scopes(config.limits), per_request=False,
                                   alert_scopes=_ALERTING_SCOPES)
        self.budget_states = BudgetStatePublisher(config.limits)
        self.circuits = StreamCircuitTracker(config.breaker)
        self.outcomes = OutcomeOrder()  # call outcomes on their way to the circuits, in event-time order
        self._summaries_since_tick = 0
        self.policy = AlertPolicy(config.alerts)
        self.incidents = IncidentManager(config.incidents)
        self.applied: dict[int, int] = {}
        self.cursor = SourceCursor()  # position on the fleet topic itself, persisted in the same blob

    def apply(self, summary: bytes) -> FleetOutcome:
        data = json.loads(summary)
        if "p" not in data:  # alert events alone: merged idempotently
            return FleetOutcome([], [], applied=True, incidents=self.incidents.apply(data.get("alerts", [])))
        source, offset = int(data["p"]), int(data["o"])
        if self.applied.get(source, -1) >= offset:
            return FleetOutcome([], [], applied=False)
        self.applied[source] = offset
        observations = []
        if data["spend"]:
            rows = data["spend"]
            model = np.array([row[0] for row in rows], dtype=object)
            ts = np.array([row[1] for row in rows], dtype=np.int64)
            cost = np.array([row[2] for row in rows], dtype=np.int64)
            service = np.array([row[3] if len(row) > 3 else None for row in rows], dtype=object)
            user = np.array([row[4] if len(row) > 4 else None for row in rows], dtype=object)
            crossings = self.ledger.apply_batch(ts, service, user, model, cost)
            for crossing in highest_crossings(crossings):
                observations.append(crossing.observation())
        self._summaries_since_tick += 1
        transitions = self._circuits(self.outcomes.add(source, _outcomes(data["outcomes"])))
        observations += [t.observation() for t in transitions]
        alerts = self.policy.observe_many(observations)
        members = [*data.get("alerts", []), *(event.to_record() for event in alerts)]
        return FleetOutcome(alerts, transitions, applied=True, incidents=self.incidents.apply(members))

    def budget_records(self, now_ms: int, refresh: bool) -> list[tuple[bytes, dict[str, Any]]]:
        """budget_state records to publish (budget_state.py): changed states, and with ``refresh`` new spend
        and the global heartbeat."""
        return self.budget_states.records(self.ledger, now_ms, refresh)

    def tick(self, now_ms: int) -> FleetOutcome:
        """Resolve held or stale fleet alerts, and incidents without news. When no summary came since the last
        tick, the calls partitions have gone quiet: outcomes still held for ordering go to the circuits."""
        transitions = [] if self._summaries_since_tick else self._circuits(self.outcomes.release(flush=True))
        self._summaries_since_tick = 0
        alerts = self.policy.observe_many([t.observation() for t in transitions]) + self.policy.tick(now_ms)
        incidents = self.incidents.apply(event.to_record() for event in alerts) + self.incidents.tick(now_ms)
        return FleetOutcome(alerts, transitions, applied=True, incidents=incidents)

    def acknowledge(self, alert_id: str, actor: str, now_ms: int) -> tuple[list[AlertEvent], list[IncidentEvent]]:
        """Acknowledge a fleet alert, or an incident (its members are acknowledged where they live: the caller
        sends them on). Returns the acknowledged fleet alerts and incident events; both empty when unknown."""
        incident = self.incidents.acknowledge(alert_id, actor, now_ms)
        if incident is not None:
            return [], [incident]
        acked = self.policy.acknowledge(alert_id, actor, now_ms)
        if acked is None:
            return [], []
        return [acked], self.incidents.apply([acked.to_record()])

    def to_bytes(self) -> bytes:
        return json.dumps({
            "ledger": self.ledger.to_dict(), "circuits": self.circuits.to_dict(), "outcomes": self.outcomes.to_dict(),
            "policy": self.policy.to_dict(), "applied": {str(k): v for k, v in self.applied.items()},
            "incidents": self.incidents.to_dict(),
            "cursor": self.cursor.next_offset,
        }, separators=(",", ":")).encode()

    @staticmethod
    def cursor_of(blob: bytes) -> int | None:
        """The persisted fleet-topic cursor alone, without rebuilding the engine (read on every assignment)."""
        cursor = json.loads(blob).get("cursor")
        return None if cursor is None else int(cursor)

    @classmethod
    def from_bytes(cls, blob: bytes, config: FleetConfig) -> FleetEngine:
        data = json.loads(blob)
        out = cls(config)
        out.ledger = BudgetLedger.from_dict(data["ledger"], config.limits, scopes=fleet_scopes(config.limits),
                                            per_request=False, alert_scopes=_ALERTING_SCOPES)
        out.circuits = StreamCircuitTracker.from_dict(data["circuits"], config.breaker)
        out.outcomes = OutcomeOrder.from_dict(data.get("outcomes"))
        out.policy = AlertPolicy.from_dict(data["policy"], config.alerts)
        out.incidents = IncidentManager.from_dict(data.get("incidents", {}), config.incidents)
        out.applied = {int(k): int(v) for k, v in data["applied"].items()}
        out.cursor = SourceCursor(data.get("cursor"))
        return out

    def _circuits(self, outcomes: Outcomes) -> list[CircuitTransition]:
        return self.circuits.apply_keyed(outcomes.timestamp_ms, outcomes.key, outcomes.keys, outcomes.ok)


def _outcomes(rows: list[list[Any]]) -> Outcomes:
    """A summary's ``[provider, model, timestamps, "1"/"0" per call]`` rows as columns (a row per key, usually;
    rows of one key share its code). Timestamps come as base64 of pack_deltas, or as a list of numbers (summaries
    written before it)."""
    if not rows:
        return Outcomes.empty()
    counts = [len(row[3]) for row in rows]
    index: dict[tuple[str | None, str | None], int] = {}
    codes = [index.setdefault((row[0], row[1]), len(index)) for row in rows]
    return Outcomes(
        np.concatenate([_timestamps(row[2], n) for row, n in zip(rows, counts, strict=True)]),
        np.repeat(np.array(codes, np.int64), counts),
        np.frombuffer("".join(row[3] for row in rows).encode(), np.uint8) == ord("1"),
        tuple(index),
    )


def _timestamps(written: str | list[int], n: int) -> np.ndarray:
    """The ``n`` timestamps of an outcomes row."""
    if not isinstance(written, str):
        times = np.array(written, dtype=np.int64)
        if times.size != n:
            raise ValueError(f"an outcomes row has {times.size} timestamps for {n} outcomes")
        return times
    try:
        raw = base64.b64decode(written, validate=True)
        times, end = unpack_deltas(raw, 0, n)
    except (binascii.Error, ValueError, IndexError) as exc:
        raise ValueError(f"unreadable timestamps in an outcomes row: {exc}") from None
    if end != len(raw):
        raise ValueError(f"an outcomes row has more timestamps than its {n} outcomes")
    return times
