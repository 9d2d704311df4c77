"""Cause families of alert rules: which rules share a likely cause, and how each kind of family groups and pages.

Incidents (incidents.py) group member alerts by family; the tables are here, apart from the grouping rules, so
that adding a rule to a family, or a family to a kind, is an edit to data alone.
"""

from __future__ import annotations

from collections.abc import Mapping

# Rules that share a likely cause; a rule not listed is a family of its own.
FAMILIES: Mapping[str, str] = {
    "latency_p95": "availability", "latency_p99": "availability", "ttft_p95": "availability",
    "ttft_p99": "availability", "error_rate": "availability", "provider_circuit": "availability",
    "cost_per_request": "spend", "token_average": "spend", "request_budget": "spend",
    "budget": "spend", "budget_burn": "spend", "budget_projection": "spend",
    "distribution_drift": "distribution", "confidence_drift": "drift",
    "prompt_injection": "injection", "security_incident": "injection",
    "pii_leak": "pii",
    "hallucination": "output_quality", "unsafe_content": "output_quality", "no_answer_rate": "output_quality",
    "ab_regression": "experiment",
}
# Families that follow a cause rather than being one: a latency spike shifts the latency distribution, a cost
# spike the token one. Joined to an incident with a cause, they do not hold it open: it resolves with its causes.
SYMPTOM_FAMILIES = frozenset({"drift", "distribution"})
# Families that never page on their own: a distribution that moved while every rule on the traffic holds (an A/B
# arm, a new prompt, a shift in what users ask) is news for the model's owner, recorded at the informational
# priority (P3, the digest), not a reason to wake anyone. Their incidents take no member of another family (a
# cause opens its own, which pages); their members still join a cause's incident on their series, as detail.
QUIET_FAMILIES = frozenset({"distribution"})
_INFO_SUFFIX = "/info"  # INFO members form families of their own: they never group with paging members


def family_of(rule: str, severity: str = "WARNING") -> str:
    family = FAMILIES.get(rule, rule)
    return f"{family}{_INFO_SUFFIX}" if severity == "INFO" else family


def informational(family: str) -> bool:
    return family.endswith(_INFO_SUFFIX)


def symptom_family(family: str) -> bool:
    return family in SYMPTOM_FAMILIES


def quiet(family: str) -> bool:
    return family.removesuffix(_INFO_SUFFIX) in QUIET_FAMILIES
