"""Time to first token by value: streamed calls with known TTFTs go through the partition engine; its TTFT window
gives p50/p95/p99 within the sketch's 1 % of the exact order statistics (processors/core/sketch.py), counts
streamed calls only, and the exporter's TTFT histogram holds exactly the known bucket counts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from llmpulse.processors.core.engine import EngineConfig, PartitionEngine
from llmpulse.processors.core.guard_monitor import GuardMonitor, GuardMonitorConfig
from llmpulse.processors.core.latency import QUANTILES
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.core.series_totals import SECONDS_BUCKETS
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.metrics import WorkerMetrics
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers.batching import BatchEncoder

NOW = int(time.time() * 1000)
SERIES = "chat\x1fgpt-4o\x1fopenai"
LABELS = {"service": "chat", "model": "gpt-4o", "provider": "openai"}
ACCURACY = 0.01  # LatencyConfig.relative_accuracy, the sketch's documented bound
N = 2_000


@pytest.fixture(scope="module")
def shared() -> tuple[Pricer, GuardMonitor]:
    return Pricer(), GuardMonitor(GuardMonitorConfig(), read_injection_model())


def _ttft_ms(name: str, rng: np.random.Generator) -> np.ndarray:
    makers = {
        "lognormal": lambda: rng.lognormal(np.log(350.0), 0.6, N),
        "warm_and_cold": lambda: np.where(rng.random(N) < 0.9, rng.normal(80.0, 8.0, N), rng.normal(1800.0, 200.0, N)),
        "heavy_tail": lambda: (rng.pareto(1.5, N) + 1.0) * 120.0,
        "whole_ms": lambda: np.round(rng.gamma(2.0, 150.0, N)) + 1.0,
    }
    return np.abs(makers[name]()) + 0.5


def _feed(engine: PartitionEngine, exporter: MetricsExporter, ttft_ms: np.ndarray, streamed: np.ndarray) -> None:
    """One call per TTFT, spread over the last four minutes in records of 500 calls; unstreamed calls have none."""
    rng = np.random.default_rng(1)
    stamps = NOW - rng.integers(1_000, 240_000, ttft_ms.size)
    rows = [
        {"event_id": str(i), "timestamp_ms": int(stamps[i]), "service": "chat", "provider": "openai",
         "request_model": "gpt-4o", "status": "ok", "latency_ms": float(ttft_ms[i]) + 900.0,
         "ttft_ms": float(ttft_ms[i]) if streamed[i] else None, "input_tokens": 120, "output_tokens": 40}
        for i in range(ttft_ms.size)
    ]
    decoder = CallDecoder(Limits(), 1 << 24, 10_000)
    for offset, start in enumerate(range(0, len(rows), 500)):
        calls, refused = decoder.decode(BatchEncoder("test").encode_batch(rows[start:start + 500]), NOW)
        assert not refused and calls is not None
        outcome = engine.process(calls, offset=offset, now_ms=NOW)
        exporter.record_batch(outcome.totals, outcome.accepted)


@pytest.mark.parametrize("name", ["lognormal", "warm_and_cold", "heavy_tail", "whole_ms"])
def test_ttft_percentiles_are_within_one_percent_of_the_exact_ones(shared: tuple[Pricer, GuardMonitor],
                                                                   name: str) -> None:
    rng = np.random.default_rng(7)
    ttft_ms = _ttft_ms(name, rng)
    streamed = rng.random(N) < 0.7  # the rest were not streamed: no first token to time
    engine = PartitionEngine(0, EngineConfig(), *shared)
    registry = CollectorRegistry()
    exporter = MetricsExporter(WorkerMetrics(registry))
    _feed(engine, exporter, ttft_ms, streamed)
    ttft_s = ttft_ms[streamed] / 1000.0

    sketch = engine.latency.window(SERIES, 300, NOW, ttft=True)
    assert sketch.count == int(streamed.sum())
    exact = np.quantile(ttft_s, QUANTILES, method="lower")
    estimate = sketch.quantiles(QUANTILES)
    for q, want, got in zip(QUANTILES, exact, estimate, strict=True):
        assert abs(got - want) <= ACCURACY * want + 1e-12, f"p{q * 100:g}: {got} s, exact {want} s"
    # the latency window is another sketch: every call, its own values
    assert engine.latency.window(SERIES, 300, NOW).count == N
    # what a user reads: /api/metrics rows and the quantile gauge, the same sketch's figures
    [row] = engine.summary(NOW)
    assert row["ttft"]["5m"]["count"] == int(streamed.sum())
    assert [row["ttft"]["5m"][f"p{int(q * 100)}"] for q in QUANTILES] == pytest.approx(list(estimate), rel=1e-12)
    exporter.refresh([engine], None, NOW)
    p99 = registry.get_sample_value("llmpulse_llm_time_to_first_token_quantile_seconds",
                                    {"service": "chat", "model": "gpt-4o", "window": "5m", "quantile": "0.99"})
    assert p99 == pytest.approx(float(estimate[list(QUANTILES).index(0.99)]), rel=1e-12)

    def sample(suffix: str, **extra: str) -> float | None:
        return registry.get_sample_value(f"llmpulse_llm_time_to_first_token_seconds{suffix}", {**LABELS, **extra})

    assert sample("_count") == streamed.sum()
    assert sample("_sum") == pytest.approx(ttft_s.sum(), rel=1e-9)
    for bound in SECONDS_BUCKETS:  # le: a value equal to its bound belongs to it
        assert sample("_bucket", le=str(bound)) == np.count_nonzero(ttft_s <= bound), f"le={bound}"
    assert sample("_bucket", le="+Inf") == streamed.sum()
