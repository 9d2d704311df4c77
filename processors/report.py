"""The usage report for a day, an ISO week or a month, built from the state the worker already keeps.

Pure: the caller gathers the inputs (daily usage from the engines' SavingsTracker, budget rows from the
partition and fleet ledgers, the month-end projection, alert records from the alerts topic, experiment
comparisons, the health rows of core/health.py, the KPI definitions of core/kpis.py) and gets a JSON-ready dict.
Every services and models row carries ``cost_per_1k_requests_usd`` over the period. Periods are UTC calendar
periods containing ``now_ms`` (today, this ISO week from Monday, this month), the same buckets the budget ledger
uses; they run to ``now_ms``.

A worker only holds the calls of its own partitions: ``partitions`` in the report says which. Alerts are the
whole alerts topic (every worker reads all of it); fleet budgets appear on the worker that owns the fleet stage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from llmpulse.processors.core.health import cost_per_1k
from llmpulse.processors.core.kpis import Kpi, kpi_rows
from llmpulse.processors.core.ledger import month_bounds
from llmpulse.processors.core.savings import COUNTERS, DAY_MS, ServiceSavings, Usage, UsageRow
from llmpulse.processors.core.sketch import LatencySketch

PERIODS = ("day", "week", "month")
_QUANTILES = (0.5, 0.95, 0.99)
_BUDGET_PERIOD = {"day": ("day",), "week": ("day", "month"), "month": ("month",)}
_RECENT_ALERTS = 20


def period_bounds(period: str, now_ms: int) -> tuple[int, int]:
    """[start, now] of the UTC calendar period containing ``now_ms``; ValueError for an unknown period."""
    day_start = now_ms - now_ms % DAY_MS
    if period == "day":
        return day_start, now_ms
    if period == "week":
        weekday = datetime.fromtimestamp(now_ms / 1000, tz=UTC).weekday()  # Monday = 0, as in ISO weeks
        return day_start - weekday * DAY_MS, now_ms
    if period == "month":
        return month_bounds(now_ms)[0], now_ms
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


def _figures(counts: np.ndarray, latency: LatencySketch) -> dict[str, Any]:
    c = dict(zip(COUNTERS, counts.tolist(), strict=True))
    n = c["requests"]
    failed = c["errors"] + c["timeouts"] + c["rate_limited"]
    values = latency.quantiles(_QUANTILES) if latency.count else [np.nan] * len(_QUANTILES)
    return {
        "requests": n,
        "errors": c["errors"], "timeouts": c["timeouts"], "rate_limited": c["rate_limited"],
        "filtered": c["filtered"],
        "error_ratio": failed / n if n else 0.0,
        "input_tokens": c["input_tokens"], "output_tokens": c["output_tokens"], "cached_tokens": c["cached_tokens"],
        "tokens_per_request": (c["input_tokens"] + c["output_tokens"]) / n if n else 0.0,
        "cost_usd": c["cost_micros"] / 1e6,
        "cost_per_1k_requests_usd": cost_per_1k(c["cost_micros"], n),
        "unpriced_requests": n - c["priced"],
        "cache_hit_ratio": c["cache_hits"] / n if n else 0.0,
        "latency_ms": {f"p{round(q * 100)}": (None if np.isnan(v) else round(float(v) * 1000.0, 1))
                       for q, v in zip(_QUANTILES, values, strict=True)},
    }


def _rollup(rows: Iterable[UsageRow], accuracy: float = 0.01) -> tuple[np.ndarray, LatencySketch]:
    rows = list(rows)
    counts = np.sum([r.counts for r in rows], axis=0) if rows else np.zeros(len(COUNTERS), dtype=np.int64)
    sketch = LatencySketch.merge_all([r.latency for r in rows]) if rows else LatencySketch(accuracy)
    return counts, sketch


def _grouped(usage: Usage, *names: str) -> list[dict[str, Any]]:
    groups: dict[tuple[str, ...], list[UsageRow]] = {}
    for row in usage.rows.values():
        groups.setdefault(tuple(getattr(row, n) for n in names), []).append(row)
    out = [{**dict(zip(names, key, strict=True)), **_figures(*_rollup(rows))} for key, rows in groups.items()]
    return sorted(out, key=lambda r: (-r["cost_usd"], -r["requests"], *(str(r[n]) for n in names)))


def _top_users(usage: Usage, top: int) -> list[dict[str, Any]]:
    spend: Counter[tuple[str, str]] = Counter()
    for service, users in usage.users.items():
        for user, micros in users.items():
            spend[(service, user)] += micros
    return [{"service": s, "user": u, "cost_usd": m / 1e6} for (s, u), m in spend.most_common(top)]


def _budgets(rows: Iterable[dict[str, Any]], period: str) -> list[dict[str, Any]]:
    wanted = _BUDGET_PERIOD[period]
    chosen = [
        {"scope": r["scope"], "key": r["key"], "period": r["period"], "spent_usd": r["spent_micros"] / 1e6,
         "limit_usd": r["limit_micros"] / 1e6 if r.get("limit_micros") else None, "used_ratio": r.get("used_ratio")}
        for r in rows if r["period"] in wanted and (r.get("limit_micros") or r["scope"] in ("global", "service"))
    ]
    return sorted(chosen, key=lambda r: (-(r["used_ratio"] or 0.0), -r["spent_usd"]))


def _alerts(records: Iterable[dict[str, Any]], start_ms: int, end_ms: int) -> dict[str, Any]:
    fired = [r for r in records if start_ms <= r["started_at_ms"] <= end_ms]
    fired.sort(key=lambda r: -r["started_at_ms"])
    return {
        "fired": len(fired),
        "open": sum(r["status"] != "resolved" for r in fired),
        "by_rule": dict(Counter(r["rule"] for r in fired).most_common()),
        "by_severity": dict(Counter(r["severity"] for r in fired).most_common()),
        "recent": [{k: r.get(k) for k in ("alert_id", "rule", "severity", "status", "service", "model",
                                          "summary", "started_at_ms")} for r in fired[:_RECENT_ALERTS]],
    }


def _projection(view: dict[str, Any] | None) -> dict[str, Any] | None:
    if view is None:
        return None
    limit = view.get("limit_micros")
    return {"spent_usd": view["spent_micros"] / 1e6, "projected_usd": view["projected_micros"] / 1e6,
            "limit_usd": limit / 1e6 if limit else None, "elapsed_fraction": view["elapsed_fraction"],
            "over_limit": view["over_limit"], "reliable": view["reliable"]}


def build_report(
    period: str,
    now_ms: int,
    usage: Usage,
    *,
    savings: Iterable[ServiceSavings] = (),
    budget_rows: Iterable[dict[str, Any]] = (),
    projection: dict[str, Any] | None = None,
    alerts: Iterable[dict[str, Any]] = (),
    experiments: Iterable[dict[str, Any]] = (),
    partitions: Iterable[int] = (),
    top: int = 10,
    health: Iterable[dict[str, Any]] = (),
    kpis: Iterable[Kpi] = (),
) -> dict[str, Any]:
    """The report dict (JSON-ready); see the module docstring for what each input is."""
    start_ms, end_ms = period_bounds(period, now_ms)
    totals = _figures(*_rollup(usage.rows.values()))
    models = _grouped(usage, "model", "provider")
    spend = totals["cost_usd"] or 1.0
    for row in models:
        row["cost_share"] = row["cost_usd"] / spend
    return {
        "period": period,
        "start": _iso(start_ms), "end": _iso(end_ms), "start_ms": start_ms, "end_ms": end_ms,
        "partitions": sorted(partitions),
        "totals": totals,
        "services": _grouped(usage, "service"),
        "models": models[:top],
        "users": _top_users(usage, top),
        "budgets": _budgets(budget_rows, period),
        "projection": _projection(projection),
        "alerts": _alerts(alerts, start_ms, end_ms),
        "savings": [s.as_dict() for s in savings],
        "experiments": list(experiments),
        "health": list(health),  # now, over the health window: not the period's
        "kpis": kpi_rows(usage, kpis),
    }


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat(timespec="seconds")
