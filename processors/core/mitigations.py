"""Suggested first mitigation per alert rule, on every alert event: a runbook pointer, not automation."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_MITIGATIONS: dict[str, str] = {
    "latency_p95": (
        "Scale up or add capacity; enable response caching; check upstream provider status and recent "
        "deploys."
    ),
    "latency_p99": (
        "Look for long prompts or stuck streams; set client timeouts; route tail traffic to a faster model."
    ),
    "error_rate": "Enable the fallback model/provider; check upstream dependencies and provider status.",
    "cost_per_request": "Cap max tokens; trim prompts and context; route simple requests to a cheaper model.",
    "request_budget": "Find the call that exceeded the per-request limit (trace id); cap max_tokens and context size.",
    "budget": "Route to a cheaper model; enable rate limiting per service/user; review the top spenders.",
    "budget_burn": (
        "Find the caller (the alert's key, service and model) and stop or throttle it: a runaway job or a retry "
        "loop; with the SDK's admission gate in enforce mode its calls are refused once the budget is gone."
    ),
    "budget_projection": (
        "Review the monthly trend and top spenders; cut volume or switch models before month end."
    ),
    "confidence_drift": (
        "Check for data drift; compare against the previous model/prompt version; consider rollback."
    ),
    "distribution_drift": (
        "Inspect the shifted inputs; check for a new traffic source; retrain or adjust prompts."
    ),
    "prompt_injection": (
        "Tighten input guardrails; block or rate-limit the source; review the flagged prompts."
    ),
    "security_incident": "Block the source; rotate exposed credentials; escalate to the security on-call.",
    "hallucination": (
        "Enable a manual review queue for risky topics; add grounding/citations; lower temperature."
    ),
    "pii_leak": "Enable output PII redaction; purge affected logs; review which prompts carry personal data.",
    "unsafe_content": (
        "Tighten output guardrails; enable the manual review queue; check the moderation model."
    ),
    "no_answer_rate": (
        "Check the knowledge base for gaps and retrieval failures; review recent content changes."
    ),
    "provider_circuit": (
        "Fail over to the alternate provider; check the provider's status page and rate limits."
    ),
    "ab_regression": "Stop or roll back the losing variant; check its sample size and guardrail metrics.",
    "ab_improvement": "Keep the experiment running to its decision or promote the better variant; check guardrails.",
    "ab_winner": "Promote the winning variant to all traffic and end the experiment.",
    "quality_drop": (
        "Roll back to the previous model/prompt version; check for data drift and recent prompt or model changes."
    ),
    "concept_drift": (
        "Inputs look the same but answers got worse: roll back to the previous model/prompt version, then "
        "re-evaluate the prompt against fresh labelled examples."
    ),
    "token_average": "Find the callers with long prompts or outputs; cap max tokens; summarise context.",
}

MITIGATIONS = MappingProxyType(_MITIGATIONS)
DEFAULT_MITIGATION = "Check the dashboard for the affected service and model; follow the team runbook."


def mitigation_for(rule: str, labels: Mapping[str, str] | None = None) -> str:
    """The rule's runbook line; quality alerts that name a version to return to get it spelt out."""
    target = (labels or {}).get("rollback_to")
    if target and rule in ("quality_drop", "concept_drift"):
        return (f"Roll back {labels.get('service', 'the service')} from {labels.get('version', 'this version')} "  # type: ignore[union-attr]
                f"to {target}, the previous version with good quality; then check for data drift.")
    return MITIGATIONS.get(rule, DEFAULT_MITIGATION)
