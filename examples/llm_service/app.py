"""An LLM-backed FastAPI service instrumented with llmpulse: one line wraps the client, the router fails over.

    python -m llmpulse.producers.simulation.fake_llm_api --port 8808 &          # or any OpenAI-compatible endpoint
    uvicorn examples.llm_service.app:app --port 8000

Environment (read here, in the example, never in the llmpulse core):

    LLM_BASE_URL          OpenAI-compatible base URL (default http://127.0.0.1:8808/v1, the fake API)
    LLM_API_KEY           API key (default "not-needed" for the fake API)
    LLM_MODELS            preference list, best first (default "gpt-4o,gpt-4o-mini")
    LLM_TIMEOUT_S         per-call timeout (default 30)
    BUDGET_HOURLY_USD     this process's spend over the last hour that makes /health/ready say 503 (default 10)
    KAFKA_BOOTSTRAP_SERVERS, LLMPULSE_*   where the Pulse sends calls (see producers/settings.py); with
                          LLMPULSE_SDK_ADMISSION_MODE=enforce /ask answers 429 with Retry-After when a fleet budget
                          (or a per-request limit) says no, and with LLMPULSE_SDK_GUARD=block 400 on a prompt
                          injection: the SDK's decisions (BudgetExceeded, PromptBlocked), raised before any request
    ROUTER_BOOTSTRAP      broker holding llm-provider-state; unset: local circuit breakers only
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from openai import APIError, AsyncOpenAI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel

from llmpulse.producers import BudgetExceeded, PromptBlocked, Pulse
from llmpulse.producers.instrumentation import instrument_openai
from llmpulse.producers.router import NoHealthyProvider, ProviderRouter

# USD per million tokens, for the example's own budget only; the llmpulse processors price calls authoritatively.
PRICES = {"gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60)}
DEFAULT_PRICE = (2.50, 10.00)
NO_ANSWER_MARKERS = ("i don't know", "i don't have", "no information")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    base_url: str = "http://127.0.0.1:8808/v1"
    api_key: str = "not-needed"
    models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")
    timeout_s: float = 30.0
    budget_hourly_usd: float = 10.0
    router_bootstrap: str | None = None

    @classmethod
    def from_env(cls) -> ServiceConfig:
        env, default = os.environ.get, cls()
        return cls(
            base_url=env("LLM_BASE_URL", default.base_url),
            api_key=env("LLM_API_KEY", default.api_key),
            models=tuple(m.strip() for m in env("LLM_MODELS", ",".join(default.models)).split(",") if m.strip()),
            timeout_s=float(env("LLM_TIMEOUT_S", str(default.timeout_s))),
            budget_hourly_usd=float(env("BUDGET_HOURLY_USD", str(default.budget_hourly_usd))),
            router_bootstrap=env("ROUTER_BOOTSTRAP") or None,
        )


class Metrics:
    """Every metric of the service, built on a registry that is passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("ai_requests_total", "Requests", ["endpoint", "status"], registry=registry)
        self.latency = Histogram("ai_request_seconds", "Request latency", ["endpoint"], registry=registry,
                                 buckets=(0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
        self.active = Gauge("ai_active_requests", "Requests in flight", registry=registry)
        self.tokens = Counter("ai_tokens_total", "Tokens", ["model", "direction"], registry=registry)
        self.cost = Counter("ai_cost_usd_total", "Spend in USD", ["model"], registry=registry)
        self.cache = Counter("ai_cache_ops_total", "Answer cache lookups", ["result"], registry=registry)
        self.no_answer = Counter("ai_no_answer_total", "Answers that were 'I don't know'", registry=registry)
        self.circuit_open = Gauge("ai_circuit_open", "1 when a model's circuit is open", ["model"], registry=registry)


@dataclass
class Budget:
    """Spend over the last hour and since start; thread-safe."""

    hourly_limit_usd: float
    total_usd: float = 0.0
    _spends: deque[tuple[float, float]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, usd: float) -> None:
        with self._lock:
            self.total_usd += usd
            self._spends.append((time.monotonic(), usd))

    def hourly_usd(self) -> float:
        with self._lock:
            cutoff = time.monotonic() - 3600
            while self._spends and self._spends[0][0] < cutoff:
                self._spends.popleft()
            return sum(usd for _, usd in self._spends)

    def status(self) -> dict[str, float]:
        hourly = self.hourly_usd()
        return {"hourly_spend_usd": round(hourly, 6), "hourly_remaining_usd": round(self.hourly_limit_usd - hourly, 6),
                "total_spend_usd": round(self.total_usd, 6)}


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    price_in, price_out = PRICES.get(model, DEFAULT_PRICE)
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


class AskRequest(BaseModel):
    question: str
    feature: str = "ask"
    user: str | None = None  # the caller's (hashed) user id: per-user budgets and rate limits apply to it


class Service:
    """The parts /ask needs; built once per app."""

    def __init__(self, config: ServiceConfig, pulse: Any, registry: CollectorRegistry) -> None:
        self.config = config
        self.pulse = pulse
        self.metrics = Metrics(registry)
        self.budget = Budget(config.budget_hourly_usd)
        self.cache: dict[str, dict[str, Any]] = {}
        self.router = ProviderRouter([("openai", m) for m in config.models], bootstrap=config.router_bootstrap)
        client = AsyncOpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s,
                             max_retries=0)  # the router, not blind retries, handles a failing model
        self.client = instrument_openai(client, pulse=pulse, feature="ask")

    async def ask(self, question: str, user: str | None = None) -> dict[str, Any]:
        key = " ".join(question.lower().split())
        cached = self.cache.get(key)
        if cached is not None:
            self.metrics.cache.labels(result="hit").inc()
            self.pulse.record(provider="openai", request_model=cached["model"], latency_ms=0.0, cache_hit=True)
            return {**cached, "cached": True, "cost_usd": 0.0}
        self.metrics.cache.labels(result="miss").inc()
        provider, model = self.router.choose()
        try:
            reply = await self.client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], temperature=0,
                **({"user": user} if user else {}))
        except APIError:
            self.router.record(provider, model, ok=False)
            raise
        self.router.record(provider, model, ok=True)
        return self._answer(model, reply, key)

    def _answer(self, model: str, reply: Any, key: str) -> dict[str, Any]:
        answer = reply.choices[0].message.content or ""
        usage = reply.usage
        tokens_in, tokens_out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        cost = cost_usd(model, tokens_in, tokens_out)
        self.budget.add(cost)
        self.metrics.tokens.labels(model=model, direction="input").inc(tokens_in)
        self.metrics.tokens.labels(model=model, direction="output").inc(tokens_out)
        self.metrics.cost.labels(model=model).inc(cost)
        no_answer = any(marker in answer.lower() for marker in NO_ANSWER_MARKERS)
        result = {"answer": answer, "model": model, "input_tokens": tokens_in, "output_tokens": tokens_out,
                  "no_answer": no_answer}
        if no_answer:
            self.metrics.no_answer.inc()
        else:
            self.cache[key] = result
        return {**result, "cached": False, "cost_usd": round(cost, 8)}

    def circuits(self) -> dict[str, dict[str, str]]:
        states = {}
        for provider, model in self.router.preferences:
            state, source = self.router.state(provider, model)
            self.metrics.circuit_open.labels(model=model).set(1 if state == "OPEN" else 0)
            states[f"{provider}/{model}"] = {"state": state, "source": source}
        return states


def create_app(config: ServiceConfig | None = None, pulse: Any = None) -> FastAPI:
    config = config or ServiceConfig.from_env()
    owns_pulse = pulse is None
    pulse = pulse if pulse is not None else Pulse(service="llm-service")
    registry = CollectorRegistry()
    service = Service(config, pulse, registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.router.close()
        if owns_pulse:
            pulse.close()

    app = FastAPI(title="llmpulse example LLM service", lifespan=lifespan)
    app.state.service = service

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        service.metrics.active.inc()
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            service.metrics.active.dec()
            service.metrics.requests.labels(endpoint=request.url.path, status=str(status)).inc()
            service.metrics.latency.labels(endpoint=request.url.path).observe(time.perf_counter() - started)

    @app.post("/ask")
    async def ask(body: AskRequest) -> dict[str, Any]:
        try:
            return await service.ask(body.question, body.user)
        except BudgetExceeded as exc:  # the SDK's gate said no before any request was sent
            headers = {"Retry-After": exc.decision.retry_after_header()} if exc.retry_after is not None else None
            raise HTTPException(429, f"LLM budget exhausted: {exc.scope} {exc.key} {exc.period} ({exc.reason})",
                                headers=headers) from None
        except PromptBlocked as exc:
            raise HTTPException(400, f"prompt refused: {exc.reason} (score {exc.score:.2f})") from None
        except NoHealthyProvider as exc:
            raise HTTPException(503, str(exc)) from None
        except APIError as exc:
            raise HTTPException(502, f"LLM provider error: {type(exc).__name__}") from None

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> Response:
        circuits = service.circuits()
        budget = service.budget.status()
        any_closed = any(c["state"] != "OPEN" for c in circuits.values())
        is_ready = any_closed and budget["hourly_remaining_usd"] > 0
        payload = {"ready": is_ready, "circuits": circuits, "budget": budget}
        return Response(json.dumps(payload).encode(), status_code=200 if is_ready else 503,
                        media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        service.circuits()  # refresh the circuit gauges at scrape time
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/cost")
    async def cost() -> dict[str, float]:
        return service.budget.status()

    return app


def __getattr__(name: str) -> Any:
    """``uvicorn examples.llm_service.app:app`` builds the app on first access, not at import."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
