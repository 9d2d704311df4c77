"""An LLM-backed FastAPI service instrumented with llmpulse: one line wraps the client, the router fails over.

POST /ask answers a question (from the TTL answer cache when it can: a hit is an llm_call with cache_hit and cost
0); POST /investigate runs a small tool-using agent (agent.py). Failed calls are retried with backoff (retries.py),
one llm_call per attempt. Every log line is JSON with the request's request_id and trace_id (request_ids.py).

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
    CACHE_TTL_S           how long an answer is served from the cache (default 300); CACHE_MAX_ENTRIES (1024)
    LLM_MAX_ATTEMPTS      attempts per LLM call, the first included (default 3); the backoff after attempt n is
                          LLM_RETRY_BASE_S * 2^(n-1) (default 0.5), at most LLM_RETRY_MAX_S (8), less up to 20 %
    AGENT_MAX_ITERATIONS  model calls per /investigate (default 5)
    LOG_FORMAT, LOG_LEVEL json (default) or text; info (default)
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from openai import APIError, AsyncOpenAI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel

from examples.llm_service.agent import TOOLS, investigate
from examples.llm_service.cache import TTLCache, cache_key
from examples.llm_service.request_ids import (
    RequestIds,
    TaggedRecorder,
    current_call,
    current_request,
    request_fields,
    request_ids,
)
from examples.llm_service.retries import RetryPolicy, retry_after_s, retryable
from llmpulse.logs import LogFormat, log_fields, logging_config
from llmpulse.producers import BudgetExceeded, PromptBlocked, Pulse
from llmpulse.producers.instrumentation import instrument_openai
from llmpulse.producers.router import NoHealthyProvider, ProviderRouter

log = logging.getLogger("llm_service")
QUIET_PATHS = frozenset({"/metrics", "/health/live", "/health/ready"})  # scraped and probed: logged at debug

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
    cache_ttl_s: float = 300.0
    cache_max_entries: int = 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    agent_max_iterations: int = 5
    log_format: LogFormat = "json"
    log_level: str = "info"

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
            cache_ttl_s=float(env("CACHE_TTL_S", str(default.cache_ttl_s))),
            cache_max_entries=int(env("CACHE_MAX_ENTRIES", str(default.cache_max_entries))),
            retry=RetryPolicy(max_attempts=int(env("LLM_MAX_ATTEMPTS", str(default.retry.max_attempts))),
                              base_delay_s=float(env("LLM_RETRY_BASE_S", str(default.retry.base_delay_s))),
                              max_delay_s=float(env("LLM_RETRY_MAX_S", str(default.retry.max_delay_s)))),
            agent_max_iterations=int(env("AGENT_MAX_ITERATIONS", str(default.agent_max_iterations))),
            log_format="text" if env("LOG_FORMAT", default.log_format).lower() == "text" else "json",
            log_level=env("LOG_LEVEL", default.log_level),
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
        self.attempts = Counter("ai_llm_attempts_total", "LLM call attempts by outcome: ok, retried or failed",
                                ["model", "outcome"], registry=registry)
        self.agent_iterations = Histogram("ai_agent_iterations", "Model calls per investigation", registry=registry,
                                          buckets=(1, 2, 3, 4, 5, 6, 8, 10))
        self.agent_tool_calls = Histogram("ai_agent_tool_calls", "Tool calls per investigation", registry=registry,
                                          buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16))


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


class Completion(NamedTuple):
    """One answered LLM call and what it cost this service."""

    model: str
    reply: Any
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Service:
    """The parts /ask and /investigate need; built once per app.

    ``http_client`` and ``sleep`` are for tests: the OpenAI client's transport and the wait between attempts."""

    def __init__(self, config: ServiceConfig, pulse: Any, registry: CollectorRegistry, *,
                 http_client: httpx.AsyncClient | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
        self.pulse = pulse
        self.metrics = Metrics(registry)
        self.budget = Budget(config.budget_hourly_usd)
        self.cache: TTLCache[dict[str, Any]] = TTLCache(config.cache_ttl_s, config.cache_max_entries)
        self.router = ProviderRouter([("openai", m) for m in config.models], bootstrap=config.router_bootstrap)
        self._sleep = sleep
        client = AsyncOpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s,
                             max_retries=0, http_client=http_client)  # our retries: one recorded call per attempt
        # TaggedRecorder adds the request's trace id, request id and attempt number to every recorded call.
        self.client = instrument_openai(client, pulse=TaggedRecorder(pulse), feature="ask")

    async def ask(self, question: str, user: str | None = None) -> dict[str, Any]:
        key = cache_key(question)
        started = time.perf_counter()
        cached = self.cache.get(key)
        if cached is not None:
            self.metrics.cache.labels(result="hit").inc()
            hit = {"provider": "openai", "request_model": cached["model"], "feature": "ask", "status": "ok",
                   "latency_ms": (time.perf_counter() - started) * 1000.0, "cache_hit": True, "cost_micros": 0}
            self.pulse.record(**request_fields({**hit, **({"user_hash": user} if user else {})}))
            log.info("answered from cache", extra={"model": cached["model"], "cached": True, "cost_usd": 0.0})
            return {**cached, "cached": True, "cost_usd": 0.0}
        self.metrics.cache.labels(result="miss").inc()
        done = await self._complete([{"role": "user", "content": question}], "ask", user)
        answer = done.reply.choices[0].message.content or ""
        no_answer = any(marker in answer.lower() for marker in NO_ANSWER_MARKERS)
        result = {"answer": answer, "model": done.model, "input_tokens": done.input_tokens,
                  "output_tokens": done.output_tokens, "no_answer": no_answer}
        if no_answer:
            self.metrics.no_answer.inc()
        else:
            self.cache.put(key, result)
        log.info("answered", extra={"model": done.model, "cached": False, "no_answer": no_answer,
                                    "tokens": done.input_tokens + done.output_tokens, "cost_usd": done.cost_usd})
        return {**result, "cached": False, "cost_usd": round(done.cost_usd, 8)}

    async def investigate(self, question: str, user: str | None = None) -> dict[str, Any]:
        """The agent (agent.py) with the runbook tool; iterations and tool calls go to the agent histograms."""
        costs: list[float] = []

        async def complete(messages: list[dict[str, Any]]) -> tuple[str, Any]:
            done = await self._complete(messages, "investigate", user, tools=TOOLS)
            costs.append(done.cost_usd)
            return done.model, done.reply

        result = await investigate(complete, question, self.config.agent_max_iterations)
        self.metrics.agent_iterations.observe(result.iterations)
        self.metrics.agent_tool_calls.observe(result.tool_calls)
        log.info("investigated", extra={"model": result.model, "iterations": result.iterations,
                                        "tool_calls": result.tool_calls, "finished": result.finished,
                                        "cost_usd": sum(costs)})
        return {"answer": result.answer, "model": result.model, "iterations": result.iterations,
                "tool_calls": result.tool_calls, "finished": result.finished, "cost_usd": round(sum(costs), 8)}

    async def _complete(self, messages: list[dict[str, Any]], feature: str, user: str | None,
                        **request: Any) -> Completion:
        """One chat completion: up to ``retry.max_attempts`` attempts, each on the model the router picks then,
        each recorded by the instrumented client as its own llm_call (labels: attempt, request_id)."""
        policy = self.config.retry
        for attempt in range(1, policy.max_attempts + 1):
            provider, model = self.router.choose()
            try:
                with current_call(feature, attempt):
                    reply = await self.client.chat.completions.create(
                        model=model, messages=messages, temperature=0, **request, **({"user": user} if user else {}))
            except APIError as exc:
                self.router.record(provider, model, ok=False)
                if attempt == policy.max_attempts or not retryable(exc):
                    self.metrics.attempts.labels(model=model, outcome="failed").inc()
                    log.error("LLM call failed", extra={"model": model, "attempt": attempt,
                                                        "error": type(exc).__name__})
                    raise
                delay = policy.delay_s(attempt, retry_after_s(exc))
                self.metrics.attempts.labels(model=model, outcome="retried").inc()
                log.warning("LLM call failed; retrying", extra={"model": model, "attempt": attempt,
                                                                "error": type(exc).__name__, "retry_in_s": delay})
                await self._sleep(delay)
                continue
            self.router.record(provider, model, ok=True)
            self.metrics.attempts.labels(model=model, outcome="ok").inc()
            return self._spend(model, reply)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _spend(self, model: str, reply: Any) -> Completion:
        usage = reply.usage
        tokens_in, tokens_out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        cost = cost_usd(model, tokens_in, tokens_out)
        self.budget.add(cost)
        self.metrics.tokens.labels(model=model, direction="input").inc(tokens_in)
        self.metrics.tokens.labels(model=model, direction="output").inc(tokens_out)
        self.metrics.cost.labels(model=model).inc(cost)
        return Completion(model, reply, tokens_in, tokens_out, cost)

    def circuits(self) -> dict[str, dict[str, str]]:
        states = {}
        for provider, model in self.router.preferences:
            state, source = self.router.state(provider, model)
            self.metrics.circuit_open.labels(model=model).set(1 if state == "OPEN" else 0)
            states[f"{provider}/{model}"] = {"state": state, "source": source}
        return states


def create_app(config: ServiceConfig | None = None, pulse: Any = None, **service_options: Any) -> FastAPI:
    """The app; ``service_options`` go to :class:`Service` (tests: ``http_client``, ``sleep``)."""
    config = config or ServiceConfig.from_env()
    owns_pulse = pulse is None
    pulse = pulse if pulse is not None else Pulse(service="llm-service")
    registry = CollectorRegistry()
    service = Service(config, pulse, registry, **service_options)

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
        ids = RequestIds.from_headers(request.headers)
        service.metrics.active.inc()
        started = time.perf_counter()
        status = 500
        with current_request(ids), log_fields(**ids.log_fields()):
            try:
                response = await call_next(request)
                status = response.status_code
                response.headers["X-Request-ID"] = ids.request_id
                response.headers["X-Trace-ID"] = ids.trace_id
                return response
            finally:
                elapsed = time.perf_counter() - started
                service.metrics.active.dec()
                service.metrics.requests.labels(endpoint=request.url.path, status=str(status)).inc()
                service.metrics.latency.labels(endpoint=request.url.path).observe(elapsed)
                log.log(logging.DEBUG if request.url.path in QUIET_PATHS else logging.INFO,
                        "%s %s %d", request.method, request.url.path, status,
                        extra={"method": request.method, "path": request.url.path, "status": status,
                               "duration_ms": round(elapsed * 1000.0, 1)})

    async def answering(answer: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The answer with the request's id, or the HTTP error the SDK's or the provider's refusal means."""
        try:
            result = await answer
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
        ids = request_ids()
        return {**result, "request_id": ids.request_id} if ids is not None else result

    @app.post("/ask")
    async def ask(body: AskRequest) -> dict[str, Any]:
        return await answering(service.ask(body.question, body.user))

    @app.post("/investigate")
    async def investigate_(body: AskRequest) -> dict[str, Any]:
        return await answering(service.investigate(body.question, body.user))

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
        config = ServiceConfig.from_env()
        logging.config.dictConfig(logging_config(config.log_level, config.log_format))
        built = create_app(config)
        globals()["app"] = built
        return built
    raise AttributeError(name)
