"""Budgets for the benchmark's fleet, derived from a sample of its control traffic.

The seed budgets ($10/hour, $50/day, $500/month over everything) suit one small service; 8 services at ~24
calls/s spend far more in an ordinary hour, so with them the control day would page on budget all day. As an
operator would, the limits are set from traffic seen before: a control sample with its own seed (not the
day that is judged), priced as the worker prices it. Hour limits are ``HOUR_HEADROOM`` x the highest hourly
spend of any key of the scope (every service shares one service limit, every model one model limit); day
limits ``DAY_HEADROOM`` x the highest day spend (the sample scaled to 24 h); month limits and the month-end
projection 30 days of the day limit. Users get limits too, the same way: the budget-exhaustion scenario is one
runaway caller, and a per-user limit is what sees it whatever service it calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from bench.alert_fleet import Fleet
from llmpulse.processors.core.pricing import CallUsage, Pricer
from llmpulse.processors.settings import BudgetRules, ProcessorSettings
from llmpulse.producers.simulation.traffic_model import CallBlock

HOUR_HEADROOM = 2.0
DAY_HEADROOM = 1.5
SAMPLE_STEP_S = 60.0
USD = 1e6
SCOPE_COLUMNS: dict[str, Callable[[CallBlock], np.ndarray]] = {
    "global": lambda block: np.full(len(block), "all", dtype=object),
    "service": lambda block: block.service,
    "model": lambda block: block.request_model,
    "user": lambda block: block.user_hash,
}


def derive(settings: ProcessorSettings, rate: float, seed: int, sample_s: float, day_start_ms: int) -> BudgetRules:
    """Budget rules with limits set from ``sample_s`` of control traffic drawn with ``seed``."""
    fleet = Fleet(rate, np.random.default_rng(seed))
    pricer = Pricer(settings.prices_file)
    spent: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))  # (scope, hour) -> key
    t = 0.0
    while t < sample_s:
        hour = int(t // 3600)
        for _service, block in fleet.step(t, t + SAMPLE_STEP_S, day_start_ms):
            usage = CallUsage(block.provider, block.request_model, block.input_tokens, block.output_tokens,
                              block.cached_tokens)
            cost = pricer.fill_missing(block.cost_micros, usage)
            cost = np.where(cost >= 0, cost, 0).astype(np.float64)
            for scope, column in SCOPE_COLUMNS.items():
                keys, inverse = np.unique(column(block), return_inverse=True)
                for key, total in zip(keys.tolist(), np.bincount(inverse, weights=cost).tolist(), strict=True):
                    spent[(scope, hour)][key] += total
        t += SAMPLE_STEP_S
    days = max(sample_s / 86_400.0, 1e-9)
    limits: dict[str, float] = {}
    for scope in SCOPE_COLUMNS:
        hourly = [by_key for (s, _hour), by_key in spent.items() if s == scope]
        peak_hour = max((v for by_key in hourly for v in by_key.values()), default=0.0)
        whole: dict[str, float] = defaultdict(float)
        for by_key in hourly:
            for key, value in by_key.items():
                whole[key] += value
        peak_day = max(whole.values(), default=0.0) / days
        limits[f"{scope}_hour_usd"] = round(HOUR_HEADROOM * peak_hour / USD, 2)
        limits[f"{scope}_day_usd"] = round(DAY_HEADROOM * peak_day / USD, 2)
        limits[f"{scope}_month_usd"] = round(30 * limits[f"{scope}_day_usd"], 2)
    return settings.budgets.model_copy(update={**limits, "projection_month_usd": limits["global_month_usd"]})
