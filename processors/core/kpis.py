"""Business KPIs: the spend per named outcome over a report period (seed 001's "cost per follow").

An outcome is counted from the calls themselves: a call recorded with ``labels={"outcome": "follow"}`` counts one
``follow`` for its service on its UTC day (savings.DayUsage keeps the counts with the day's usage, exactly once
like the spend). A KPI names the outcome and, optionally, the services whose spend it carries:

    kpis: [{name: cost_per_follow, outcome: follow}]                        # every service's spend
    kpis: [{name: cost_per_signup, outcome: signup, services: [onboarding]}]

``cost_per_outcome_usd = spend / outcomes`` over the period for those services (None while no outcome was
counted: a KPI with no outcomes is unknown, not free or infinite), with the same figure per service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmpulse.processors.core.savings import INDEX, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Kpi:
    name: str  # e.g. "cost_per_follow"
    outcome: str  # the value of labels["outcome"] that counts, e.g. "follow"
    services: tuple[str, ...] = ()  # whose spend and outcomes count; empty: every service


def _per_outcome(micros: int, outcomes: int) -> float | None:
    return micros / 1e6 / outcomes if outcomes else None


def kpi_rows(usage: Usage, kpis: Iterable[Kpi]) -> list[dict[str, Any]]:
    """Per KPI: spend, outcomes and cost per outcome, in total and per service (services with spend or outcomes)."""
    spend: dict[str, int] = {}
    for row in usage.rows.values():
        spend[row.service] = spend.get(row.service, 0) + int(row.counts[INDEX["cost_micros"]])
    out = []
    for kpi in kpis:
        chosen = set(kpi.services) if kpi.services else set(spend) | set(usage.outcomes)
        per_service = []
        for service in sorted(chosen):
            micros, count = spend.get(service, 0), usage.outcomes.get(service, {}).get(kpi.outcome, 0)
            if micros or count:
                per_service.append({"service": service, "cost_usd": micros / 1e6, "outcomes": count,
                                    "cost_per_outcome_usd": _per_outcome(micros, count)})
        micros = sum(spend.get(service, 0) for service in chosen)
        count = sum(usage.outcomes.get(service, {}).get(kpi.outcome, 0) for service in chosen)
        out.append({"name": kpi.name, "outcome": kpi.outcome, "services": list(kpi.services),
                    "cost_usd": micros / 1e6, "outcomes": count, "cost_per_outcome_usd": _per_outcome(micros, count),
                    "by_service": per_service})
    return out
