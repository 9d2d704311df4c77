"""The built-in traffic model: who calls which model, how many tokens, how fast, how often it fails.

Token counts and the mix of workloads come from real traces (``producers/simulation/data/traffic_model.json``, written
by ``python -m llmpulse.producers.simulation.derive_traffic_model``): each service draws input/output tokens from the
clipped lognormal fitted to its workload, and services get traffic in proportion to their workload's arrival
rate. The traces carry no latency, model names, users or failures, so those are stated here as assumptions:

- latency = (base + per input token + per output token) x lognormal noise, per model. The constants are
  fast-serving figures chosen so that the *baseline* p95 of every (service, model) stays under 2 s and p99
  under 5 s (the default alert thresholds): the simulator's job is a quiet baseline that incidents stand out
  from. Streamed calls also get a time to first token (base + prefill);
- ~1 % errors, confidence ~ Beta(16, 4) (mean 0.8), 10 % application cache hits, 2 % "I don't know" answers,
  users drawn from a Zipf law over hashed ids, and 5 % of calls carrying benign prompt/response text.

numpy is needed (the ``processor`` extra); the SDK itself never imports this module.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the llmpulse simulator needs numpy: pip install 'llmpulse[simulation]'", name="numpy"
    ) from exc

DEFAULT_PARAMS_PATH = Path(__file__).parent / "data" / "traffic_model.json"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A provider model and its latency law (milliseconds)."""

    provider: str
    name: str
    base_ms: float
    ms_per_input_token: float
    ms_per_output_token: float
    noise_sigma: float = 0.3


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """An application: the trace workload it resembles, its share of it, and its models."""

    name: str
    workload: str
    workload_share: float
    models: tuple[tuple[str, float], ...]  # (model name, weight)
    max_output_tokens: int  # the app's max_tokens: outputs above it are cut off
    stream_share: float
    feature: str


@dataclass(frozen=True, slots=True)
class TokenFit:
    mu: float
    sigma: float
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Workload:
    """Fitted parameters of one trace (see derive_traffic_model.py)."""

    rate_per_min: float
    input_tokens: TokenFit
    output_tokens: TokenFit
    log_corr: float = 0.0  # correlation of log input and log output tokens
    prefix_cache_share: float = 0.0  # share of calls that read a cached prompt prefix ...
    prefix_cache_fraction: float = 0.0  # ... and the mean share of their input tokens it covers


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Baseline rates that no trace provides."""

    error_rate: float = 0.01
    error_mix: tuple[tuple[str, str, float], ...] = (  # (status, error_type, weight)
        ("error", "InternalServerError", 0.5),
        ("rate_limited", "RateLimitError", 0.35),
        ("timeout", "APITimeoutError", 0.15),
    )
    timeout_ms: float = 30_000.0
    confidence_beta: tuple[float, float] = (16.0, 4.0)
    cache_hit_rate: float = 0.10
    no_answer_rate: float = 0.02
    text_share: float = 0.05
    users: int = 2_000
    zipf_exponent: float = 1.1


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("openai", "gpt-4o", 300.0, 0.006, 1.6),
    ModelSpec("openai", "gpt-4o-mini", 220.0, 0.004, 1.1),
    ModelSpec("anthropic", "claude-3-5-sonnet-20241022", 380.0, 0.007, 1.8),
    ModelSpec("anthropic", "claude-3-haiku-20240307", 200.0, 0.004, 1.0),
)
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("checkout-assistant", "azure-conv", 0.4, (("gpt-4o-mini", 0.7), ("claude-3-haiku-20240307", 0.3)),
                300, 0.8, "cart-help"),
    ServiceSpec("support-bot", "azure-conv", 0.6, (("gpt-4o", 0.6), ("claude-3-5-sonnet-20241022", 0.4)),
                512, 0.7, "ticket-reply"),
    ServiceSpec("code-review", "azure-code", 1.0, (("claude-3-5-sonnet-20241022", 0.6), ("gpt-4o", 0.4)),
                1024, 0.0, "pr-review"),
    ServiceSpec("search-summarizer", "mooncake-conv", 1.0, (("gpt-4o-mini", 0.6), ("claude-3-haiku-20240307", 0.4)),
                400, 0.5, "answer-box"),
)

# Benign text, one (prompt, response) list per service: what the guardrails should let through untouched.
BENIGN_TEXT: dict[str, tuple[tuple[str, str], ...]] = {
    "checkout-assistant": (
        ("Can I change the delivery address on my order?", "Yes. Open the order page and choose Edit address."),
        ("Do you ship to Canada?", "We ship to Canada; delivery usually takes five to eight working days."),
        ("Which size should I pick for the trail shoes?", "They run a little small, so a half size up is common."),
    ),
    "support-bot": (
        ("My app keeps logging me out.", "Sorry about that. Clearing the app cache and signing in again helps."),
        ("How do I reset my password?", "Use Forgot password on the sign-in page and follow the email link."),
        ("Where can I download my invoice?", "Invoices are under Account, then Billing, then History."),
    ),
    "code-review": (
        ("Review this function that parses the config file.", "Consider closing the file with a context manager."),
        ("Is this loop correct?", "The loop skips the last element; iterate up to len(items) instead."),
    ),
    "search-summarizer": (
        ("Summarise the page about hiking trails near the lake.", "The page lists three trails around the lake."),
        ("What does the article say about the new library hours?", "The library now opens at nine on Sundays."),
    ),
}


@dataclass(slots=True)
class CallBlock:
    """Generated calls as parallel numpy columns; scenarios edit these in place, whole masks at a time."""

    timestamp_ms: np.ndarray
    service: np.ndarray
    provider: np.ndarray
    request_model: np.ndarray
    status: np.ndarray
    error_type: np.ndarray
    latency_ms: np.ndarray
    ttft_ms: np.ndarray  # NaN: not streamed
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    cost_micros: np.ndarray  # -1: let the processor price it
    confidence: np.ndarray  # NaN: absent
    cache_hit: np.ndarray
    no_answer: np.ndarray
    user_hash: np.ndarray
    feature: np.ndarray
    experiment_id: np.ndarray
    variant: np.ndarray
    prompt_text: np.ndarray
    response_text: np.ndarray
    scenario: np.ndarray  # name of the scenario that changed the call, None for baseline
    prompt_version: np.ndarray | None = None  # object[str | None], set by scenarios that need it
    feedback: np.ndarray | None = None  # float64 0/1 correct, NaN: no feedback (the simulator sends it)

    def __len__(self) -> int:
        return int(self.timestamp_ms.shape[0])

    def to_calls(self) -> list[dict[str, Any]]:
        """One ``llm_call`` dict per row for ``Pulse.record``, leaving out absent optional fields."""
        columns = {f.name: getattr(self, f.name).tolist() for f in fields(self)
                   if f.name not in ("scenario", "feedback") and getattr(self, f.name) is not None}
        calls = []
        scenarios = self.scenario.tolist()
        for values, scenario in zip(zip(*columns.values(), strict=True), scenarios, strict=True):
            # None and NaN mean "absent"; so does cost -1 (the processor prices the call).
            row = {k: v for k, v in zip(columns, values, strict=True) if v is not None and v == v}
            if row["cost_micros"] < 0:
                del row["cost_micros"]
            if scenario is not None:
                row["labels"] = {"sim_scenario": scenario}
            calls.append(row)
        return calls


def _object(values: Iterable[Any], n: int) -> np.ndarray:
    array = np.empty(n, dtype=object)
    array[:] = list(values) if not isinstance(values, np.ndarray) else values
    return array


def _nones(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


@functools.lru_cache(maxsize=4)
def _user_hashes(count: int) -> np.ndarray:
    return _object((hashlib.sha256(f"sim-user-{i}".encode()).hexdigest()[:16] for i in range(count)), count)


def _token_fit(spec: Mapping[str, Any]) -> TokenFit:
    return TokenFit(float(spec["mu"]), float(spec["sigma"]), int(spec["min"]), int(spec["max"]))


def load_workloads(path: str | Path = DEFAULT_PARAMS_PATH) -> tuple[dict[str, Workload], float]:
    """The fitted workloads and arrival gap CV; FileNotFoundError names the command that writes them."""
    try:
        params = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        refit = "python -m llmpulse.producers.simulation.derive_traffic_model"
        raise FileNotFoundError(f"{path} is missing: run {refit}") from None
    workloads = {}
    for name, spec in params["workloads"].items():
        cache = spec.get("prefix_cache", {})
        workloads[name] = Workload(
            rate_per_min=float(spec["rate_per_min"]),
            input_tokens=_token_fit(spec["input_tokens"]),
            output_tokens=_token_fit(spec["output_tokens"]),
            log_corr=float(spec.get("log_corr", 0.0)),
            prefix_cache_share=float(cache.get("share", 0.0)),
            prefix_cache_fraction=float(cache.get("fraction", 0.0)),
        )
    return workloads, float(params["burstiness"]["arrival_gap_cv"])


@dataclass(slots=True)
class TrafficModel:
    """Turns arrival times into baseline calls. Build with ``TrafficModel.load()``."""

    workloads: dict[str, Workload]
    arrival_gap_cv: float = 1.0
    services: tuple[ServiceSpec, ...] = SERVICES
    models: tuple[ModelSpec, ...] = MODELS
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        missing = {s.workload for s in self.services} - set(self.workloads)
        if missing:
            # Traces absent at derive time: fall back to a workload that was fitted, rather than fail.
            fallback = next(iter(self.workloads))
            self.services = tuple(replace(s, workload=fallback) if s.workload in missing else s for s in self.services)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PARAMS_PATH, **overrides: Any) -> TrafficModel:
        workloads, gap_cv = load_workloads(path)
        return cls(workloads=workloads, arrival_gap_cv=gap_cv, **overrides)

    def restricted(self, names: Iterable[str]) -> TrafficModel:
        """The same model over a subset of services; ValueError on an unknown name."""
        wanted = list(names)
        known = {s.name for s in self.services}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"unknown service(s) {unknown}; known: {sorted(known)}")
        return replace(self, services=tuple(s for s in self.services if s.name in wanted))

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def service_weights(self) -> np.ndarray:
        """Traffic share of each service: its share of its workload x that workload's trace arrival rate."""
        raw = np.array([s.workload_share * self.workloads[s.workload].rate_per_min for s in self.services])
        return raw / raw.sum()

    def model_spec(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    # ---- generation -------------------------------------------------------------------------------
    def block(
        self,
        timestamps_ms: np.ndarray,
        rng: np.random.Generator,
        input_tokens: np.ndarray | None = None,
        output_tokens: np.ndarray | None = None,
    ) -> CallBlock:
        """Baseline calls at the given times; token counts from a trace replace the fitted ones when given."""
        n = len(timestamps_ms)
        service_idx = rng.choice(len(self.services), size=n, p=self.service_weights())
        model_names = np.empty(n, dtype=object)
        inputs = np.zeros(n, dtype=np.int64)
        outputs = np.zeros(n, dtype=np.int64)
        cached = np.zeros(n, dtype=np.int64)
        stream = np.zeros(n, dtype=bool)
        for k, spec in enumerate(self.services):  # a handful of services: loop over them, not over calls
            rows = np.flatnonzero(service_idx == k)
            names, weights = zip(*spec.models, strict=True)
            model_names[rows] = np.asarray(names, dtype=object)[rng.choice(len(names), rows.size, p=_norm(weights))]
            workload = self.workloads[spec.workload]
            inputs[rows], outputs[rows] = sample_tokens(workload, rows.size, rng)
            outputs[rows] = np.minimum(outputs[rows], spec.max_output_tokens)
            cached[rows] = _prefix_cached(workload, inputs[rows], rng)
            stream[rows] = rng.random(rows.size) < spec.stream_share
        if input_tokens is not None:
            inputs = np.asarray(input_tokens, dtype=np.int64)
            cached = np.minimum(cached, inputs)
        if output_tokens is not None:
            outputs = np.asarray(output_tokens, dtype=np.int64)
        services = _object(self.service_names, len(self.services))[service_idx]
        block = self._assemble(np.asarray(timestamps_ms, dtype=np.int64), services, model_names, inputs, outputs,
                               cached, rng)
        self.set_latency(block, np.arange(n), rng, stream=stream)
        self._apply_behaviour(block, rng)
        return block

    def _assemble(
        self, ts: np.ndarray, services: np.ndarray, model_names: np.ndarray, inputs: np.ndarray,
        outputs: np.ndarray, cached: np.ndarray, rng: np.random.Generator,
    ) -> CallBlock:
        n = len(ts)
        providers = np.empty(n, dtype=object)
        for spec in self.models:
            providers[model_names == spec.name] = spec.provider
        features = np.empty(n, dtype=object)
        for spec in self.services:
            features[services == spec.name] = spec.feature
        a, b = self.behaviour.confidence_beta
        return CallBlock(
            timestamp_ms=ts, service=services, provider=providers, request_model=model_names,
            status=np.full(n, "ok", dtype=object), error_type=_nones(n),
            latency_ms=np.zeros(n), ttft_ms=np.full(n, np.nan), input_tokens=inputs, output_tokens=outputs,
            cached_tokens=cached, cost_micros=np.full(n, -1, dtype=np.int64), confidence=rng.beta(a, b, n),
            cache_hit=np.zeros(n, dtype=bool), no_answer=np.zeros(n, dtype=bool),
            user_hash=self._users(n, rng), feature=features, experiment_id=_nones(n), variant=_nones(n),
            prompt_text=_nones(n), response_text=_nones(n), scenario=_nones(n),
        )

    def _users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        count = self.behaviour.users
        weights = 1.0 / np.arange(1, count + 1) ** self.behaviour.zipf_exponent
        return _user_hashes(count)[rng.choice(count, size=n, p=weights / weights.sum())]

    def set_latency(
        self, block: CallBlock, rows: np.ndarray, rng: np.random.Generator, stream: np.ndarray | None = None,
        factor: float | np.ndarray = 1.0,
    ) -> None:
        """(Re)compute latency and TTFT of ``rows`` from their tokens; ``stream`` defaults to 'has a TTFT'."""
        names = block.request_model[rows]
        base, per_in, per_out, sigma = (np.zeros(rows.size) for _ in range(4))
        for spec in self.models:  # a handful of models: one masked assignment each
            hit = names == spec.name
            base[hit], per_in[hit], per_out[hit] = spec.base_ms, spec.ms_per_input_token, spec.ms_per_output_token
            sigma[hit] = spec.noise_sigma
        scale = rng.lognormal(0.0, 1.0, rows.size) ** sigma * factor
        prefill = (base + per_in * block.input_tokens[rows]) * scale
        streamed = ~np.isnan(block.ttft_ms[rows]) if stream is None else stream[rows]
        block.latency_ms[rows] = prefill + per_out * block.output_tokens[rows] * scale
        block.ttft_ms[rows] = np.where(streamed, prefill, np.nan)

    def set_errors(self, block: CallBlock, rows: np.ndarray, rng: np.random.Generator,
                   mix: tuple[tuple[str, str, float], ...] | None = None) -> None:
        """Turn ``rows`` into failed calls: no output, no confidence, fast unless they timed out."""
        mix = mix or self.behaviour.error_mix
        pick = rng.choice(len(mix), size=rows.size, p=_norm([w for _, _, w in mix]))
        block.status[rows] = np.asarray([s for s, _, _ in mix], dtype=object)[pick]
        block.error_type[rows] = np.asarray([e for _, e, _ in mix], dtype=object)[pick]
        block.output_tokens[rows] = 0
        block.confidence[rows] = np.nan
        block.ttft_ms[rows] = np.nan
        timed_out = block.status[rows] == "timeout"
        block.latency_ms[rows] = np.where(timed_out, self.behaviour.timeout_ms, rng.uniform(40.0, 600.0, rows.size))

    def _apply_behaviour(self, block: CallBlock, rng: np.random.Generator) -> None:
        n, b = len(block), self.behaviour
        cache = rng.random(n) < b.cache_hit_rate
        block.cache_hit[cache] = True
        block.input_tokens[cache] = block.output_tokens[cache] = block.cached_tokens[cache] = 0
        block.latency_ms[cache] = rng.uniform(2.0, 25.0, int(cache.sum()))
        block.ttft_ms[cache] = np.nan
        no_answer = ~cache & (rng.random(n) < b.no_answer_rate)
        block.no_answer[no_answer] = True
        block.confidence[no_answer] *= 0.4
        self.set_errors(block, np.flatnonzero(~cache & (rng.random(n) < b.error_rate)), rng)
        self._add_benign_text(block, np.flatnonzero(rng.random(n) < b.text_share), rng)

    def _add_benign_text(self, block: CallBlock, rows: np.ndarray, rng: np.random.Generator) -> None:
        for name, pairs in BENIGN_TEXT.items():
            hit = rows[block.service[rows] == name]
            pick = rng.integers(0, len(pairs), hit.size)
            block.prompt_text[hit] = _object((p for p, _ in pairs), len(pairs))[pick]
            block.response_text[hit] = _object((r for _, r in pairs), len(pairs))[pick]


def sample_tokens(workload: Workload, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Correlated clipped-lognormal (input, output) token counts of one workload."""
    z_in = rng.standard_normal(n)
    rho = workload.log_corr
    z_out = rho * z_in + np.sqrt(1.0 - rho * rho) * rng.standard_normal(n)
    return _clipped(workload.input_tokens, z_in), _clipped(workload.output_tokens, z_out)


def _clipped(fit: TokenFit, z: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.exp(fit.mu + fit.sigma * z)), fit.low, fit.high).astype(np.int64)


def _prefix_cached(workload: Workload, inputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Provider prompt-cache reads: whole 512-token blocks of a prefix seen before (Mooncake's measure)."""
    if workload.prefix_cache_share <= 0:
        return np.zeros(inputs.size, dtype=np.int64)
    fraction = np.clip(workload.prefix_cache_fraction * rng.uniform(0.5, 1.5, inputs.size), 0.0, 1.0)
    blocks = np.floor(inputs * fraction / 512).astype(np.int64) * 512
    return np.where(rng.random(inputs.size) < workload.prefix_cache_share, np.minimum(blocks, inputs), 0)


def _norm(weights: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(weights), dtype=float)
    return array / array.sum()
