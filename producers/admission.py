"""The admission gate: may this LLM call be sent? Answered from memory before any request leaves the process.

    decision = pulse.admit(service="search", user=user_hash, model="gpt-4o",
                           estimated_input_tokens=1200, max_output_tokens=400)
    if not decision.allowed:
        return 429, {"Retry-After": decision.retry_after_header()}

Checks, in order (the first that denies decides):

1. **per-request cost cap** (``max_request_cost_usd``, $0.50 as in the seeds): estimated input tokens plus
   ``max_output_tokens`` priced with the price table (producers/prices.py); a model with no price passes;
2. **token limits** (seed 004's TokenLimiter, both off by default): ``max_tokens_per_request`` on input + output,
   and ``max_average_tokens`` on the mean over the last ``average_window`` admitted calls, this one included;
3. **per-user request rate** (``user_requests_per_minute``, off by default): a token bucket per user with a
   burst of one minute's allowance;
4. **fleet budgets**: the budget-state topic (producers/budget_state.py) says a global, service, user or model
   budget is exhausted for its current hour/day/month; ``retry_after_s`` is the time left in that bucket.

Modes: ``off`` (allow everything, check nothing), ``observe`` (allow, count what would be denied), ``enforce``
(deny; every denial is recorded as a call with status ``denied`` and ``error_type`` naming the reason, which the
worker counts in ``llmpulse_llm_requests_total{status="denied"}``).

Stale or missing state (rule 4 only): when the topic cannot be read or its newest record is older than
``max_state_age_s``, the gate fails open by default (allows and counts ``stale``), or denies with reason
``budget_state_unavailable`` when ``fail_closed``. The gate itself never raises or blocks: an internal error
allows the call and is counted (``errors``).

Standard library only (the SDK's base install has no numpy); ``admit`` costs a few microseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmpulse.config import env
from llmpulse.producers.budget_state import BudgetStateFollower
from llmpulse.producers.prices import PriceTable, cost_micros

log = logging.getLogger("llmpulse.sdk")

MODES = ("off", "observe", "enforce")
USD = 1_000_000
GLOBAL_KEY = "all"


def _optional(name: str, cast: Callable[[str], Any]) -> Any:
    value = env(name, "").strip()
    return cast(value) if value else None


def _mode(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env(name, default).strip().lower()
    if value not in allowed:
        raise ValueError(f"LLMPULSE_{name}={value!r} is not one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionSettings:
    """The gate's settings; each has an ``LLMPULSE_SDK_ADMISSION_`` variable (``MODE``, ``MAX_REQUEST_COST_USD``,
    ...). Token and rate limits are off (None) by default; the cost cap is the seeds' $0.50."""

    mode: str = field(default_factory=lambda: _mode("SDK_ADMISSION_MODE", "off", MODES))
    max_request_cost_usd: float | None = field(
        default_factory=lambda: float(env("SDK_ADMISSION_MAX_REQUEST_COST_USD", "0.50")) or None)
    max_tokens_per_request: int | None = field(
        default_factory=lambda: _optional("SDK_ADMISSION_MAX_TOKENS_PER_REQUEST", int))
    max_average_tokens: int | None = field(default_factory=lambda: _optional("SDK_ADMISSION_MAX_AVERAGE_TOKENS", int))
    average_window: int = field(default_factory=lambda: int(env("SDK_ADMISSION_AVERAGE_WINDOW", "100")))
    user_requests_per_minute: float | None = field(
        default_factory=lambda: _optional("SDK_ADMISSION_USER_REQUESTS_PER_MINUTE", float))
    max_state_age_s: float = field(default_factory=lambda: float(env("SDK_ADMISSION_MAX_STATE_AGE_S", "15")))
    fail_closed: bool = field(
        default_factory=lambda: env("SDK_ADMISSION_FAIL_CLOSED", "0").strip().lower() in {"1", "true", "yes", "on"})
    # The output allowance priced when a request sets no max tokens.
    default_max_output_tokens: int = field(
        default_factory=lambda: int(env("SDK_ADMISSION_DEFAULT_MAX_OUTPUT_TOKENS", "1024")))
    max_users: int = 100_000  # rate buckets kept; beyond it the idle (full) ones are forgotten

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"admission mode {self.mode!r} is not one of {', '.join(MODES)}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's answer. ``scope/key/period`` name the limit that denied (``request``/``user_rate``/... for the
    local limits); ``retry_after_s`` is None when waiting will not help (a single call over the cap)."""

    allowed: bool
    reason: str = ""
    scope: str = ""
    key: str = ""
    period: str = ""
    retry_after_s: float | None = None
    would_deny: bool = False  # observe mode: allowed, but enforce would have denied

    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds (at least 1)."""
        return str(max(1, int(-(-(self.retry_after_s or 1) // 1))))


ALLOW = Decision(True)


class BudgetExceeded(Exception):
    """Raised by the instrumented clients in enforce mode before any request is sent: a budget or limit says no.

    ``scope`` (global, service, user, model; request, average, user_rate; or global for unavailable state),
    ``key``, ``period`` (hour, day, month, request, minute, window) and ``retry_after`` (seconds, or None).
    """

    def __init__(self, decision: Decision) -> None:
        after = "" if decision.retry_after_s is None else f"; retry after {decision.retry_after_s:.0f} s"
        super().__init__(f"llmpulse: call denied, {decision.reason} ({decision.scope} {decision.key} "
                         f"{decision.period}){after}")
        self.decision = decision
        self.reason = decision.reason
        self.scope = decision.scope
        self.key = decision.key
        self.period = decision.period
        self.retry_after = decision.retry_after_s


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    checked: int
    denied: int
    would_deny: int
    stale: int  # calls decided without fresh fleet state (allowed when failing open)
    unpriced: int  # calls the cost cap could not price
    errors: int


class AdmissionGate:
    """See the module docstring. ``record`` receives each denial as llm_call fields; ``clock`` is wall seconds."""

    def __init__(self, settings: AdmissionSettings, budgets: BudgetStateFollower | None,
                 record: Callable[..., Any] | None = None, prices: PriceTable | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.budgets = budgets
        self.prices = prices or PriceTable()
        self._record = record
        self._clock = clock
        self._cap = None if settings.max_request_cost_usd is None else round(settings.max_request_cost_usd * USD)
        self._recent: deque[int] = deque()
        self._recent_sum = 0
        self._buckets: dict[str, list[float]] = {}  # user -> [tokens, last refill time]
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("checked", "denied", "would_deny", "stale", "unpriced", "errors"), 0)

    def admit(self, *, service: str, user: str | None = None, model: str, provider: str = "",
              estimated_input_tokens: int = 0, max_output_tokens: int | None = None) -> Decision:
        """Allow, or deny with a reason and a retry-after; from memory, never raises."""
        mode = self.settings.mode
        if mode == "off":
            return ALLOW
        try:
            self._counts["checked"] += 1
            output = self.settings.default_max_output_tokens if max_output_tokens is None else max_output_tokens
            decision = self._decide(service, user, model, provider, max(int(estimated_input_tokens), 0),
                                    max(int(output), 0))
        except Exception:
            self._counts["errors"] += 1
            log.debug("llmpulse: admission check failed; allowing", exc_info=True)
            return ALLOW
        if decision.allowed:
            return decision
        if mode == "observe":
            self._counts["would_deny"] += 1
            return Decision(True, decision.reason, decision.scope, decision.key, decision.period,
                            decision.retry_after_s, would_deny=True)
        self._counts["denied"] += 1
        self._report(decision, service, user, model, provider)
        return decision

    def stats(self) -> AdmissionStats:
        return AdmissionStats(**self._counts)

    # ---- the checks --------------------------------------------------------------------------------
    def _decide(self, service: str, user: str | None, model: str, provider: str, tokens_in: int,
                tokens_out: int) -> Decision:
        s = self.settings
        if self._cap is not None:
            rate = self.prices.rate(provider, model)
            if rate is None:
                self._counts["unpriced"] += 1
                if self._counts["unpriced"] == 1:  # once: the cap cannot hold without prices
                    log.warning("llmpulse gate: no price for %s/%s, so the per-request cost cap lets it through; "
                                "install llmpulse[admission] (the genai-prices catalogue) or give the gate prices",
                                provider, model)
            elif cost_micros(rate, tokens_in, tokens_out) > self._cap:
                return Decision(False, "request_cost", "request", model, "request")
        total = tokens_in + tokens_out
        if s.max_tokens_per_request is not None and total > s.max_tokens_per_request:
            return Decision(False, "request_tokens", "request", model, "request")
        now = self._clock()
        if s.max_average_tokens is not None and not self._average_ok(total):
            return Decision(False, "average_tokens", "average", service, "window")
        if s.user_requests_per_minute and user is not None:
            wait = self._take(user, now)
            if wait > 0:
                return Decision(False, "user_rate", "user_rate", user, "minute", wait)
        return self._budgets(service, user, model, int(now * 1000))

    def _average_ok(self, total: int) -> bool:
        s = self.settings
        with self._lock:
            recent = self._recent
            if (self._recent_sum + total) > s.max_average_tokens * (len(recent) + 1):  # type: ignore[operator]
                return False
            recent.append(total)
            self._recent_sum += total
            if len(recent) > max(s.average_window - 1, 0):
                self._recent_sum -= recent.popleft()
            return True

    def _take(self, user: str, now: float) -> float:
        """Take one request from the user's bucket; 0 when allowed, else seconds until one is available."""
        per_second = self.settings.user_requests_per_minute / 60.0  # type: ignore[operator]
        burst = max(self.settings.user_requests_per_minute, 1.0)  # type: ignore[type-var]
        with self._lock:
            bucket = self._buckets.get(user)
            if bucket is None:
                if len(self._buckets) >= self.settings.max_users:
                    self._forget_idle(now, burst, per_second)
                bucket = self._buckets[user] = [burst, now]
            tokens = min(burst, bucket[0] + (now - bucket[1]) * per_second)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return 0.0
            bucket[0] = tokens
            return (1.0 - tokens) / per_second

    def _forget_idle(self, now: float, burst: float, per_second: float) -> None:
        full = [u for u, (tokens, at) in self._buckets.items() if tokens + (now - at) * per_second >= burst]
        for user in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[user]

    def _budgets(self, service: str, user: str | None, model: str, now_ms: int) -> Decision:
        budgets = self.budgets
        if budgets is None or not budgets.fresh(self.settings.max_state_age_s, now_ms):
            self._counts["stale"] += 1
            if self.settings.fail_closed:
                return Decision(False, "budget_state_unavailable", "global", GLOBAL_KEY, "",
                                self.settings.max_state_age_s)
            return ALLOW
        for scope, key in (("global", GLOBAL_KEY), ("service", service), ("user", user), ("model", model)):
            if key is None:
                continue
            entry = budgets.exhausted(scope, key, now_ms)
            if entry is not None:
                return Decision(False, "budget_exhausted", scope, key, entry.period,
                                (entry.bucket_end_ms - now_ms) / 1000.0)
        return ALLOW

    def _report(self, decision: Decision, service: str, user: str | None, model: str, provider: str) -> None:
        if self._record is None:
            return
        self._record(service=service, provider=provider or "unknown", request_model=model, status="denied",
                     error_type=decision.reason, latency_ms=0.0, cost_micros=0, user_hash=user,
                     labels={"llmpulse.denied": f"{decision.scope}/{decision.key}/{decision.period}"})
