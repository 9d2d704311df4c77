"""The alert-quality benchmark's fleet: 8 services x 4 models x 2 providers, 500 users, in event time.

Traffic comes from the simulator's traffic model (producers/simulation/traffic_model.py, fitted from the traces:
token laws, workload mix, arrival burstiness), widened from its 4 services to 8. When the traces themselves
are present (``shared_data_dir()/traces``), each service's rate also follows its workload's per-minute
arrival profile, tiled over the day with a per-service phase, damped halfway toward flat: the Azure code
trace has silent minutes that would starve 60 s windows at a few calls/s (derive_traffic_model.py caps the
gap CV for the same reason). Without the traces the rate is flat and everything else is unchanged.

A service's calls of one step form one record, keyed by service as the SDK keys them (producers/client.py)
and routed to a partition with Kafka's default partitioner (murmur2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from confluent_kafka import murmur2

from llmpulse.processors.core.columns import STATUS_CODE, CallColumns
from llmpulse.processors.core.feedback_join import LABEL, FeedbackColumns
from llmpulse.producers.simulation.derive_traffic_model import DEFAULT_TRACES_DIR, WORKLOAD_FILES
from llmpulse.producers.simulation.simulator import ArrivalProcess
from llmpulse.producers.simulation.trace_replay import read_trace
from llmpulse.producers.simulation.traffic_model import SERVICES, Behaviour, CallBlock, ServiceSpec, TrafficModel

USERS = 500
PARTITIONS = 4
DEFAULT_RATE = 24.0  # calls/s over the fleet: ~0.8-3 calls/s per (service, model) series
MINUTE_MS = 60_000
PROFILE_DAMPING = 0.5  # 0: flat, 1: the trace's per-minute swing as recorded

# Four more applications beside the simulator's four; within each workload the shares sum to 1, so the
# fleet keeps the traces' workload mix. Every model serves four services, every provider eight series. Output
# caps keep each series' baseline p99 under 2 s as the traffic model does for its own services (docs-qa's long
# Mooncake prompts on claude-3-5-sonnet with 400 output tokens sat at p95 1.6 s / p99 2.2 s and paged daily).
EXTRA_SERVICES: tuple[ServiceSpec, ...] = tuple(
    ServiceSpec(name, workload, workload_share, models, max_output_tokens, stream_share, feature)
    for name, workload, workload_share, models, max_output_tokens, stream_share, feature in (
        ("email-drafter", "azure-conv", 0.2, (("gpt-4o-mini", 0.5), ("claude-3-5-sonnet-20241022", 0.5)), 400, 0.6,
         "reply-draft"),
        ("triage-agent", "azure-conv", 0.2, (("claude-3-haiku-20240307", 0.5), ("gpt-4o", 0.5)), 256, 0.3,
         "ticket-triage"),
        ("sql-helper", "azure-code", 0.4, (("gpt-4o", 0.5), ("claude-3-haiku-20240307", 0.5)), 512, 0.2,
         "query-assist"),
        ("docs-qa", "mooncake-conv", 0.5, (("claude-3-5-sonnet-20241022", 0.5), ("gpt-4o-mini", 0.5)), 256, 0.5,
         "docs-answer"),
    )
)
SHARES = {"checkout-assistant": 0.25, "support-bot": 0.35, "code-review": 0.6, "search-summarizer": 0.5}


def fleet_services() -> tuple[ServiceSpec, ...]:
    base = tuple(replace(s, workload_share=SHARES[s.name]) for s in SERVICES)
    return base + EXTRA_SERVICES


def fleet_model() -> TrafficModel:
    return TrafficModel.load(services=fleet_services(), behaviour=Behaviour(users=USERS))


@dataclass(frozen=True, slots=True)
class Series:
    service: str
    model: str
    provider: str
    rate: float  # nominal calls/s


def fleet_series(model: TrafficModel, rate: float) -> list[Series]:
    """Every (service, model, provider) with its nominal rate."""
    out = []
    for spec, weight in zip(model.services, model.service_weights(), strict=True):
        total = sum(w for _, w in spec.models)
        for name, w in spec.models:
            out.append(Series(spec.name, name, model.model_spec(name).provider, rate * float(weight) * w / total))
    return out


def partition_of(service: str, partitions: int = PARTITIONS) -> int:
    """Kafka's default partitioner on the SDK's record key."""
    return int(murmur2(service.encode(), partitions))


def trace_profiles() -> tuple[dict[str, np.ndarray], str]:
    """Per-minute rate multipliers (mean 1) per workload from the traces, and where they came from."""
    profiles: dict[str, np.ndarray] = {}
    for workload, name in WORKLOAD_FILES.items():
        path = DEFAULT_TRACES_DIR / name
        if not path.is_file():
            continue
        minutes = (np.asarray(read_trace(path).offsets_ms) // MINUTE_MS).astype(np.int64)
        counts = np.bincount(minutes)[:-1].astype(float)  # the last minute is partial
        if counts.size and counts.mean() > 0:
            profiles[workload] = 1.0 + PROFILE_DAMPING * (counts / counts.mean() - 1.0)
    if not profiles:
        return {}, f"flat rate ({DEFAULT_TRACES_DIR} absent)"
    return profiles, (f"per-minute profiles of {', '.join(sorted(profiles))} from {DEFAULT_TRACES_DIR}, tiled, "
                      f"damped {PROFILE_DAMPING:.0%} toward flat")


class ServiceTraffic:
    """One service's arrivals (trace-shaped when a profile is given) and baseline calls."""

    def __init__(self, model: TrafficModel, spec: ServiceSpec, rate: float, profile: np.ndarray | None,
                 phase_min: int, rng: np.random.Generator) -> None:
        self.name = spec.name
        self.model = model.restricted([spec.name])
        self.profile = profile
        self.phase_min = phase_min
        self.peak = float(profile.max()) if profile is not None else 1.0
        self.arrivals = ArrivalProcess(rate * self.peak, model.arrival_gap_cv, rng)
        self.rng = rng

    def between(self, t0_s: float, t1_s: float, start_ms: int) -> CallBlock | None:
        offsets = self.arrivals.until(t1_s)
        if self.profile is not None and offsets.size:
            minute = (offsets // 60).astype(np.int64) + self.phase_min
            keep = self.rng.random(offsets.size) * self.peak < self.profile[minute % self.profile.size]
            offsets = offsets[keep]
        if not offsets.size:
            return None
        return self.model.block(start_ms + np.rint(offsets * 1000).astype(np.int64), self.rng)


class Fleet:
    """All services' traffic for one simulated day; ``step`` yields (service, block) per service with calls."""

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        self.model = fleet_model()
        self.rate = rate
        self.series = fleet_series(self.model, rate)
        profiles, self.shape = trace_profiles()
        weights = self.model.service_weights()
        self.services = [
            ServiceTraffic(self.model, spec, rate * float(w), profiles.get(spec.workload), 7 * k, rng)
            for k, (spec, w) in enumerate(zip(self.model.services, weights, strict=True))
        ]

    def step(self, t0_s: float, t1_s: float, start_ms: int) -> list[tuple[str, CallBlock]]:
        out = []
        for service in self.services:
            block = service.between(t0_s, t1_s, start_ms)
            if block is not None:
                out.append((service.name, block))
        return out


def to_columns(block: CallBlock) -> CallColumns:
    """A generated block as the columns the decoder would produce from its record (no wire round trip)."""
    n = len(block)
    status = np.zeros(n, dtype=np.int8)
    for name, code in STATUS_CODE.items():
        status[block.status == name] = code
    return CallColumns(
        timestamp_ms=block.timestamp_ms.astype(np.int64), service=block.service, provider=block.provider,
        model=block.request_model, status=status, latency_ms=block.latency_ms.astype(np.float64),
        ttft_ms=block.ttft_ms.astype(np.float64), input_tokens=block.input_tokens.astype(np.int64),
        output_tokens=block.output_tokens.astype(np.int64), cached_tokens=block.cached_tokens.astype(np.int64),
        cost_micros=block.cost_micros.astype(np.int64), confidence=block.confidence.astype(np.float64),
        cache_hit=block.cache_hit.astype(bool), no_answer=block.no_answer.astype(bool), error_type=block.error_type,
        user_hash=block.user_hash, experiment_id=block.experiment_id, variant=block.variant, feature=block.feature,
        prompt_text=block.prompt_text, response_text=block.response_text, event_id=request_ids(block),
        prompt_version=block.prompt_version,
    )


def request_ids(block: CallBlock) -> np.ndarray:
    """Ids for the calls a scenario had reviewed (feedback joins on them); None for the rest."""
    ids = np.full(len(block), None, dtype=object)
    if block.feedback is not None:
        rated = np.flatnonzero(~np.isnan(block.feedback))
        ids[rated] = [f"{service}-{ts}-{i}" for service, ts, i in
                      zip(block.service[rated], block.timestamp_ms[rated].tolist(), rated.tolist(), strict=True)]
    return ids


def feedback_of(block: CallBlock, ids: np.ndarray) -> FeedbackColumns | None:
    """The reviewers' verdicts on ``block``'s rated calls (correct or not), half a second after each call."""
    if block.feedback is None:
        return None
    rated = np.flatnonzero(~np.isnan(block.feedback))
    if not rated.size:
        return None
    return FeedbackColumns(
        service=str(block.service[rated[0]]), request_id=ids[rated],
        timestamp_ms=block.timestamp_ms[rated].astype(np.int64) + 500, kind=np.full(rated.size, LABEL, dtype=np.uint8),
        value=block.feedback[rated].astype(np.float64), source=np.full(rated.size, "bench", dtype=object),
    )
