"""The simulation engine: arrivals -> baseline calls -> scenario edits -> ``Pulse.record``.

Time advances in ticks. Each tick generates every call whose arrival falls in it (as numpy columns, with the
exact simulated timestamps), lets the scenarios edit them, then records them. In real time the engine sleeps
until the tick's end first, so a rate of 1000 calls/s costs ten wake-ups a second, not a thousand. With
``fast=True`` it never sleeps: the run's simulated time ends now and calls are recorded as fast as the SDK's
buffer drains.

    summary = simulate(pulse, TrafficModel.load(), [scenarios.get("latency-spike")], duration_s=120, rate=50)
    calls = generate_calls(1000, np.random.default_rng(1), scenario="pii-leak")   # no Kafka needed
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from llmpulse.producers.batching import new_event_id
from llmpulse.producers.simulation import scenarios as scenario_registry
from llmpulse.producers.simulation.scenarios import Scenario
from llmpulse.producers.simulation.trace_replay import LLM_CALL_JSONL, Trace
from llmpulse.producers.simulation.traffic_model import CallBlock, TrafficModel

DEFAULT_RATE = 50.0


class Clock(Protocol):
    def now(self) -> float: ...  # Unix seconds

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Recorder(Protocol):
    """What the engine needs of a Pulse (tests pass a list-backed fake)."""

    def record(self, **call: Any) -> bool: ...


class ArrivalProcess:
    """A gamma renewal process: mean gap 1/rate, gap CV ``cv`` (1 = Poisson, above 1 = bursty)."""

    def __init__(self, rate: float, cv: float, rng: np.random.Generator) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.rng = rate, rng
        self.shape = 1.0 / max(cv, 1e-3) ** 2
        self._pending = np.empty(0)
        self._last = 0.0

    def until(self, t_end: float) -> np.ndarray:
        """Arrival times (s) from where the last call left off up to ``t_end``."""
        while not self._pending.size or self._pending[-1] < t_end:
            count = int((t_end - self._last) * self.rate * 1.2) + 32
            gaps = self.rng.gamma(self.shape, 1.0 / (self.rate * self.shape), count)
            more = self._last + np.cumsum(gaps)
            self._last = float(more[-1])
            self._pending = np.concatenate([self._pending, more])
        cut = int(np.searchsorted(self._pending, t_end))
        taken, self._pending = self._pending[:cut], self._pending[cut:]
        return taken

    def first(self, n: int) -> np.ndarray:
        """The first ``n`` arrival times (s) of a fresh process."""
        gaps = self.rng.gamma(self.shape, 1.0 / (self.rate * self.shape), n)
        return np.cumsum(gaps)


class CallSource(Protocol):
    duration_s: float | None  # None: as long as asked

    def between(self, t0_s: float, t1_s: float, run_start_ms: int) -> CallBlock | list[dict[str, Any]]: ...


@dataclass(slots=True)
class ModelSource:
    """The built-in model's traffic at ``rate`` calls/s with the traces' burstiness."""

    model: TrafficModel
    rate: float
    rng: np.random.Generator
    duration_s: float | None = None
    arrivals: ArrivalProcess = field(init=False)

    def __post_init__(self) -> None:
        self.arrivals = ArrivalProcess(self.rate, self.model.arrival_gap_cv, self.rng)

    def between(self, t0_s: float, t1_s: float, run_start_ms: int) -> CallBlock:
        offsets = self.arrivals.until(t1_s)
        return self.model.block(run_start_ms + np.rint(offsets * 1000).astype(np.int64), self.rng)


@dataclass(slots=True)
class TraceSource:
    """A trace's arrivals (sped up) and token counts; the model supplies everything the trace lacks.

    An ``llm_call`` JSONL trace is replayed as recorded (only re-timed), so scenarios do not touch it.
    """

    trace: Trace
    model: TrafficModel
    rng: np.random.Generator
    speedup: float = 1.0
    duration_s: float | None = None
    _offsets_s: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._offsets_s = np.asarray(self.trace.offsets_ms, dtype=float) / 1000.0 / self.speedup
        self.duration_s = float(self._offsets_s[-1]) + 1e-3 if self._offsets_s.size else 0.0

    @property
    def rate(self) -> float:
        return len(self.trace) / max(self.duration_s or 1.0, 1.0)

    def between(self, t0_s: float, t1_s: float, run_start_ms: int) -> CallBlock | list[dict[str, Any]]:
        lo, hi = np.searchsorted(self._offsets_s, [t0_s, t1_s])
        stamps = run_start_ms + np.rint(self._offsets_s[lo:hi] * 1000).astype(np.int64)
        if self.trace.format == LLM_CALL_JSONL:
            return [{**call, "timestamp_ms": int(ts)} for call, ts in zip(self.trace.calls[lo:hi], stamps, strict=True)]
        inputs = np.asarray(self.trace.input_tokens[lo:hi], dtype=np.int64)
        outputs = np.asarray(self.trace.output_tokens[lo:hi], dtype=np.int64)
        return self.model.block(stamps, self.rng, input_tokens=inputs, output_tokens=outputs)


@dataclass(frozen=True, slots=True)
class ScenarioWindow:
    name: str
    start_ms: int
    end_ms: int
    calls: int


@dataclass(slots=True)
class SimulationSummary:
    """What was sent: per (service, status) counts, scenario windows, and the SDK's own counters."""

    start_ms: int
    end_ms: int
    generated: int = 0
    recorded: int = 0
    refused: int = 0  # Pulse.record returned False (buffer full)
    by_service_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    scenarios: list[ScenarioWindow] = field(default_factory=list)
    wall_s: float = 0.0
    sdk: Any = None  # PulseStats when the recorder has stats()

    def as_dict(self) -> dict[str, Any]:
        sdk = self.sdk
        return {
            "start_ms": self.start_ms, "end_ms": self.end_ms, "generated": self.generated,
            "recorded": self.recorded, "refused": self.refused, "wall_s": round(self.wall_s, 3),
            "by_service_status": [
                {"service": s, "status": st, "calls": n} for (s, st), n in sorted(self.by_service_status.items())
            ],
            "scenarios": [dataclasses.asdict(w) for w in self.scenarios],
            "sdk": dataclasses.asdict(sdk) if dataclasses.is_dataclass(sdk) else None,
        }


Progress = Callable[[float, SimulationSummary], None]


def simulate(
    pulse: Recorder,
    model: TrafficModel | None = None,
    scenarios: Sequence[Scenario] = (),
    duration_s: float | None = 60.0,
    rate: float = DEFAULT_RATE,
    clock: Clock | None = None,
    fast: bool = False,
    seed: int | None = None,
    source: CallSource | None = None,
    progress: Progress | None = None,
    tick_s: float = 0.1,
    max_pending: int = 50_000,
) -> SimulationSummary:
    """Run the traffic (the model's, or ``source``'s) for ``duration_s`` simulated seconds into ``pulse``.

    Real time by default; ``fast`` spreads simulated timestamps over the ``duration_s`` that end now and
    sends without sleeping, pausing only while the SDK holds more than ``max_pending`` undelivered calls.
    """
    clock = clock or SystemClock()
    rng = np.random.default_rng(seed)
    model = model or TrafficModel.load()
    source = source or ModelSource(model, rate, rng)
    rate = getattr(source, "rate", rate)
    limits = [d for d in (duration_s, source.duration_s) if d is not None]
    duration = min(limits) if limits else 0.0
    wall_start = clock.now()
    run_start_ms = int((wall_start - (duration if fast else 0.0)) * 1000)
    summary = SimulationSummary(start_ms=run_start_ms, end_ms=run_start_ms + int(duration * 1000))
    touched: Counter[str] = Counter()
    step = max(tick_s, 1.0) if fast else tick_s
    t = 0.0
    while t < duration:
        t_next = min(t + step, duration)
        if fast:
            _wait_for_room(pulse, clock, max_pending)
        else:
            clock.sleep(wall_start + t_next - clock.now())
        batch = source.between(t, t_next, run_start_ms)
        _send(pulse, batch, model, scenarios, rng, run_start_ms, rate, summary, touched)
        t = t_next
        if progress is not None:
            progress(t, summary)
    if hasattr(pulse, "flush"):
        pulse.flush()  # type: ignore[attr-defined]
    summary.wall_s = clock.now() - wall_start
    summary.scenarios = [ScenarioWindow(s.name, *s.window_ms(run_start_ms), touched[s.name]) for s in scenarios]
    summary.sdk = pulse.stats() if hasattr(pulse, "stats") else None  # type: ignore[attr-defined]
    return summary


def _send(
    pulse: Recorder, batch: CallBlock | list[dict[str, Any]], model: TrafficModel, scenarios: Sequence[Scenario],
    rng: np.random.Generator, run_start_ms: int, rate: float, summary: SimulationSummary, touched: Counter[str],
) -> None:
    if isinstance(batch, CallBlock):
        for scenario in scenarios:
            touched[scenario.name] += scenario.apply(model, batch, rng, run_start_ms, rate)
        calls = batch.to_calls()
        feedback = _with_feedback(batch, calls, pulse)
    else:
        calls, feedback = batch, []
    summary.generated += len(calls)
    for call in calls:
        if pulse.record(**call):
            summary.recorded += 1
            summary.by_service_status[(call.get("service") or "?", call.get("status") or "ok")] += 1
        else:
            summary.refused += 1
    for request_id, service, correct, ts in feedback:  # after the calls, as reviewers would
        pulse.feedback(request_id, correct=correct, source="simulator", service=service,  # type: ignore[attr-defined]
                       timestamp_ms=ts)


def _with_feedback(block: CallBlock, calls: list[dict[str, Any]], pulse: Recorder) -> list[tuple[str, str, bool, int]]:
    """Request ids for the calls a scenario rated, and their feedback (sent only to a recorder that takes it)."""
    if block.feedback is None or not hasattr(pulse, "feedback"):
        return []
    out = []
    for i in np.flatnonzero(~np.isnan(block.feedback)).tolist():
        call = calls[i]
        call["event_id"] = request_id = new_event_id()
        out.append((request_id, call["service"], bool(block.feedback[i]), int(call["timestamp_ms"]) + 500))
    return out


def _wait_for_room(pulse: Recorder, clock: Clock, max_pending: int) -> None:
    """Fast mode outruns any broker: hold back while the SDK's undelivered backlog is large."""
    stats = getattr(pulse, "stats", None)
    if stats is None:
        return
    deadline = clock.now() + 60.0
    while stats().pending > max_pending and clock.now() < deadline:
        time.sleep(0.01)


def generate_calls(
    n: int,
    rng: np.random.Generator | int | None = None,
    scenario: str | Scenario | None = None,
    t0_ms: int | None = None,
    model: TrafficModel | None = None,
    rate: float = DEFAULT_RATE,
) -> list[dict[str, Any]]:
    """``n`` realistic ``llm_call`` dicts arriving at ``rate`` from ``t0_ms`` (default: ending now).

    With ``scenario`` the incident is active for the whole span (its own window is ignored), so every call it
    selects is affected; useful for benchmarks and tests that need the calls without Kafka.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    model = model or TrafficModel.load()
    offsets = ArrivalProcess(rate, model.arrival_gap_cv, rng).first(n)
    if t0_ms is None:
        t0_ms = int(time.time() * 1000) - int(offsets[-1] * 1000 if n else 0) - 1
    block = model.block(t0_ms + np.rint(offsets * 1000).astype(np.int64), rng)
    if scenario is not None:
        chosen = scenario_registry.get(scenario) if isinstance(scenario, str) else scenario
        chosen.at(0.0, float("inf")).apply(model, block, rng, t0_ms, rate)
    return block.to_calls()
