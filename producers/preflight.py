"""What runs before a call is sent: the input guard, then the admission gate, wired for ``Pulse`` and the wrappers.

``run_preflight`` raises :class:`PromptBlocked` (guard ``block``) or :class:`BudgetExceeded` (gate ``enforce``)
and nothing else: a failure of its own allows the call. A blocked prompt is recorded like a denied call (status
``denied``, ``error_type`` ``prompt_blocked``); a prompt flagged in ``observe`` mode gets the labels
``llmpulse.guard`` and ``llmpulse.guard_score`` on its call's record. Neither sends the prompt text.

Input tokens are estimated as characters / 4, rounded up (the usual rule of thumb for English text with
OpenAI's and Anthropic's tokenizers); the output allowance is the request's max tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from llmpulse.producers.admission import AdmissionGate, BudgetExceeded, Decision
from llmpulse.producers.budget_state import BudgetStateFollower
from llmpulse.producers.prompt_guard import PromptBlocked, PromptGuard

log = logging.getLogger("llmpulse.sdk")

CHARS_PER_TOKEN = 4


class _Pulse(Protocol):
    gate: AdmissionGate
    guard: PromptGuard
    settings: Any

    def record(self, **fields: Any) -> Any: ...


def before_the_call(settings: Any, record: Callable[..., Any]) -> tuple[AdmissionGate, PromptGuard]:
    """The gate (following the budget-state topic unless its mode is off) and the guard of one Pulse."""
    follower = None
    if settings.admission.mode != "off":
        follower = BudgetStateFollower(settings.bootstrap_servers, settings.budget_state_topic,
                                       security=settings.kafka)
    return AdmissionGate(settings.admission, follower, record), PromptGuard(settings.guard)


def estimate_tokens(text: str | None) -> int:
    return -(-len(text) // CHARS_PER_TOKEN) if text else 0


def run_preflight(pulse: _Pulse, *, provider: str, model: str, prompt: str | Callable[[], str | None] | None = None,
                  user: str | None = None, service: str | None = None,
                  max_output_tokens: int | None = None) -> dict[str, Any]:
    """Guard then gate one request; returns fields for its record (labels of a flagged prompt)."""
    gate, guard = pulse.gate, pulse.guard
    if gate.settings.mode == "off" and guard.mode == "off":
        return {}
    service = service or pulse.settings.service
    blocked: PromptBlocked | None = None
    decision: Decision | None = None
    fields: dict[str, Any] = {}
    try:
        text = prompt() if callable(prompt) else prompt
        verdict = guard.check(text)
        if verdict.flagged:
            fields["labels"] = {"llmpulse.guard": verdict.reason, "llmpulse.guard_score": f"{verdict.score:.3f}"}
            if guard.mode == "block":
                blocked = PromptBlocked(verdict.reason, verdict.score, verdict.patterns)
                pulse.record(service=service, provider=provider, request_model=model, status="denied",
                             error_type="prompt_blocked", latency_ms=0.0, cost_micros=0, user_hash=user,
                             labels={**fields["labels"], "llmpulse.denied": f"guard/{verdict.reason}"})
        if blocked is None:
            decision = gate.admit(service=service, user=user, model=model, provider=provider,
                                  estimated_input_tokens=estimate_tokens(text), max_output_tokens=max_output_tokens)
    except Exception:
        log.debug("llmpulse: preflight failed; the call goes ahead", exc_info=True)
        return {}
    if blocked is not None:
        raise blocked
    if decision is not None and not decision.allowed:
        raise BudgetExceeded(decision)
    return fields
