"""The built-in traffic model: parameters fitted to the real traces, and a baseline quiet enough to alert on."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from llmpulse.producers.simulation import derive_traffic_model as derive
from llmpulse.producers.simulation.simulator import ArrivalProcess, generate_calls
from llmpulse.producers.simulation.trace_replay import read_trace
from llmpulse.producers.simulation.traffic_model import BENIGN_TEXT, DEFAULT_PARAMS_PATH, TrafficModel
from tests.support.shared_data import shared_data


@pytest.fixture(scope="module")
def model() -> TrafficModel:
    return TrafficModel.load()


@pytest.fixture(scope="module")
def calls() -> list[dict]:
    return generate_calls(60_000, np.random.default_rng(11), t0_ms=1_700_000_000_000)


@pytest.fixture
def traces() -> Path:
    """The trace folder, holding every trace the shipped parameters were fitted from."""
    for filename in derive.WORKLOAD_FILES.values():
        shared_data("traces", filename)
    return shared_data("traces")


# ---- the parameters come from the traces ----------------------------------------------------------------
def test_shipped_parameters_are_what_the_traces_give(traces: Path) -> None:
    shipped = json.loads(DEFAULT_PARAMS_PATH.read_text())
    assert json.loads(json.dumps(derive.derive(traces))) == shipped


@pytest.mark.parametrize(
    ("services", "trace_file"),
    [
        (("support-bot", "checkout-assistant"), "AzureLLMInferenceTrace_conv.csv"),
        (("code-review",), "AzureLLMInferenceTrace_code.csv"),
        (("search-summarizer",), "conversation_trace.jsonl"),
    ],
)
def test_generated_input_tokens_match_the_trace_mean(calls: list[dict], services: tuple, trace_file: str,
                                                     traces: Path) -> None:
    trace = read_trace(traces / trace_file)
    generated = [c["input_tokens"] for c in calls if c["service"] in services and not c["cache_hit"]]
    assert len(generated) > 5_000
    assert statistics.fmean(generated) == pytest.approx(statistics.fmean(trace.input_tokens), rel=0.15)


def test_service_mix_follows_the_trace_arrival_rates(calls: list[dict]) -> None:
    fitted = json.loads(DEFAULT_PARAMS_PATH.read_text())["workloads"]
    code_share = fitted["azure-code"]["rate_per_min"] / sum(w["rate_per_min"] for w in fitted.values())
    observed = statistics.fmean(c["service"] == "code-review" for c in calls)
    assert observed == pytest.approx(code_share, abs=0.01)


def test_fit_recovers_a_known_lognormal() -> None:
    rng = np.random.default_rng(3)
    sample = np.rint(np.exp(rng.normal(6.0, 0.8, 50_000))).astype(int).tolist()
    fit = derive.fit_tokens(sample)
    assert fit["mu"] == pytest.approx(6.0, abs=0.03)
    assert fit["sigma"] == pytest.approx(0.8, abs=0.03)
    assert fit["fit_mean"] == pytest.approx(statistics.fmean(sample), rel=0.01)


def test_clipped_lognormal_mean_matches_monte_carlo() -> None:
    rng = np.random.default_rng(5)
    draws = np.clip(np.exp(rng.normal(7.0, 1.3, 1_000_000)), 10, 7_000)
    assert derive.clipped_lognormal_mean(7.0, 1.3, 10, 7_000) == pytest.approx(draws.mean(), rel=0.005)


def test_derive_writes_json_from_a_trace_directory(tmp_path: Path) -> None:
    rows = "\n".join(f"2024-01-01 00:{m:02d}:{s:02d}.0000000,{100 + s},{10 + m}" for m in range(3) for s in range(60))
    (tmp_path / "AzureLLMInferenceTrace_conv.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    out = tmp_path / "model.json"
    assert derive.main(["--traces", str(tmp_path), "--out", str(out)]) == 0
    written = json.loads(out.read_text())["workloads"]["azure-conv"]
    assert written["requests"] == 180
    assert written["rate_per_min"] == pytest.approx(180 / (179 / 60), rel=1e-3)
    assert written["input_tokens"]["min"] == 100 and written["input_tokens"]["max"] == 159
    # A model built from one workload still serves every service from it.
    assert TrafficModel.load(out).block(np.arange(10), np.random.default_rng(1)).input_tokens.max() <= 159


def test_derive_fails_cleanly_without_traces(tmp_path: Path) -> None:
    assert derive.main(["--traces", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 1


# ---- baseline behaviour ---------------------------------------------------------------------------------------
def test_baseline_rates(calls: list[dict]) -> None:
    answered = [c for c in calls if not c["cache_hit"]]
    assert statistics.fmean(c["status"] != "ok" for c in answered) == pytest.approx(0.01, abs=0.003)
    assert statistics.fmean(c["cache_hit"] for c in calls) == pytest.approx(0.10, abs=0.01)
    assert statistics.fmean(c["no_answer"] for c in calls) == pytest.approx(0.02 * 0.9, abs=0.004)
    assert statistics.fmean(c["confidence"] for c in calls if "confidence" in c) == pytest.approx(0.8, abs=0.02)
    assert statistics.fmean("prompt_text" in c for c in calls) == pytest.approx(0.05, abs=0.005)
    assert all("cost_micros" not in c for c in calls)  # the processor prices baseline calls


def test_baseline_latency_stays_under_the_default_thresholds(calls: list[dict]) -> None:
    series: dict[tuple[str, str], list[float]] = {}
    for c in calls:
        series.setdefault((c["service"], c["request_model"]), []).append(c["latency_ms"])
    assert len(series) == 8
    for latencies in series.values():
        assert np.percentile(latencies, 95) < 2_000
        assert np.percentile(latencies, 99) < 5_000


def test_streamed_calls_have_a_ttft_below_their_latency(calls: list[dict]) -> None:
    streamed = [c for c in calls if "ttft_ms" in c]
    assert 0.3 < len(streamed) / len(calls) < 0.7
    assert all(0 < c["ttft_ms"] < c["latency_ms"] for c in streamed)
    assert not any(c["service"] == "code-review" for c in streamed)


def test_users_are_hashed_and_zipf_like(calls: list[dict]) -> None:
    counts = sorted(
        (sum(1 for c in calls if c["user_hash"] == u) for u in {c["user_hash"] for c in calls[:3000]}), reverse=True
    )
    assert all(len(c["user_hash"]) == 16 for c in calls[:100])
    assert counts[0] > 10 * counts[len(counts) // 2]  # a few heavy users, a long tail


def test_every_model_is_priced_by_genai_prices(model: TrafficModel) -> None:
    from llmpulse.processors.core.pricing import Pricer

    pricer = Pricer()
    for spec in model.models:
        assert pricer.rate(spec.provider, spec.name) is not None, spec.name


def test_benign_text_passes_every_guard() -> None:
    from llmpulse.processors.core.guards.guard import GuardConfig, TextGuard
    from llmpulse.processors.loaders import read_injection_model

    pairs = [pair for service in BENIGN_TEXT.values() for pair in service]
    prompts, responses = np.empty(len(pairs), dtype=object), np.empty(len(pairs), dtype=object)
    prompts[:], responses[:] = [p for p, _ in pairs], [r for _, r in pairs]
    verdict = TextGuard(GuardConfig(), read_injection_model()).check_batch(prompts, responses)
    assert not verdict.injection.any()
    assert not verdict.has_pii.any()
    assert not verdict.hallucination_risk.any()
    assert not verdict.toxic.any()


def test_generated_calls_decode_cleanly(calls: list[dict]) -> None:
    from llmpulse.processors.core.validation import Limits
    from llmpulse.processors.wire.calls import CallDecoder
    from llmpulse.producers.batching import BatchEncoder

    rows = [{**c, "event_id": f"{i:032x}"} for i, c in enumerate(calls[:2000])]
    payload = BatchEncoder("test").encode_batch(rows)
    decoded, refused = CallDecoder(Limits(), 8 << 20, 10_000).decode(payload, now_ms=1_700_000_600_000)
    assert refused == []
    assert decoded is not None and len(decoded) == 2000
    assert decoded.input_tokens.sum() == sum(c["input_tokens"] for c in rows)


def test_restricting_services(model: TrafficModel) -> None:
    only = model.restricted(["code-review"])
    block = only.block(np.arange(500), np.random.default_rng(2))
    assert set(block.service) == {"code-review"}
    with pytest.raises(ValueError, match="unknown service"):
        model.restricted(["nope"])


@pytest.mark.parametrize("cv", [1.0, 3.0])
def test_arrival_process_rate_and_burstiness(cv: float) -> None:
    arrivals = ArrivalProcess(200.0, cv, np.random.default_rng(9))
    times = np.concatenate([arrivals.until(t) for t in np.arange(0.1, 300.01, 0.1)])
    assert len(times) / 300.0 == pytest.approx(200.0, rel=0.05 * cv)
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)
    assert np.all(gaps >= 0) and times[-1] < 300.0


def test_generate_calls_is_reproducible_and_ends_now() -> None:
    first = generate_calls(200, 42, t0_ms=0)
    assert first == generate_calls(200, 42, t0_ms=0)
    recent = generate_calls(200, 1)
    import time

    assert abs(recent[-1]["timestamp_ms"] - time.time() * 1000) < 5_000
    assert not math.isnan(recent[0]["latency_ms"])
