"""Worker side of reports and routing savings: ``GET /api/report`` and the savings gauges.

GET /api/report?period=day|week|month&top=10   the usage report of this worker's partitions (processors/report.py)

Savings are computed when asked (a scrape, an API call) from the engines' daily usage, never on the hot path:
``savings_rows`` feeds ``GET /api/metrics`` and ``SavingsCollector`` the Prometheus gauges
``llmpulse_routing_savings_usd``, ``llmpulse_routing_easy_ratio`` and ``llmpulse_routing_cost_usd``
(labels service, period, and target for the savings).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmpulse.processors.core.savings import SavingsTracker, ServiceSavings, Usage, estimate_savings
from llmpulse.processors.report import PERIODS, build_report, period_bounds

if TYPE_CHECKING:
    import faust

    from llmpulse.processors.app import Worker

SAVINGS_PERIODS = ("day", "month")
MAX_TOP = 100


def _trackers(worker: Worker) -> list[SavingsTracker]:
    # getattr: an engine built without a tracker (older wiring) simply contributes no usage.
    found = (getattr(engine, "savings", None) for engine in list(worker.engines.values()))
    return [tracker for tracker in found if tracker is not None]


def period_usage(worker: Worker, period: str, now_ms: int) -> Usage:
    start, end = period_bounds(period, now_ms)
    return Usage.collect(_trackers(worker), start, end + 1)


def savings_for(worker: Worker, usage: Usage) -> list[ServiceSavings]:
    trackers = _trackers(worker)
    targets = trackers[0].config.target_models if trackers else ()
    return estimate_savings(usage, worker.pricer.rate, targets)


def savings_rows(worker: Worker, now_ms: int) -> list[dict[str, Any]]:
    """Per service and period (day, month): the routing estimate, for ``GET /api/metrics``."""
    rows = []
    for period in SAVINGS_PERIODS:
        for saving in savings_for(worker, period_usage(worker, period, now_ms)):
            rows.append({"period": period, **saving.as_dict()})
    return rows


def report_for(worker: Worker, period: str, now_ms: int, top: int = 10) -> dict[str, Any]:
    usage = period_usage(worker, period, now_ms)
    engines = list(worker.engines.values())
    budget_rows = [row for engine in engines for row in engine.budget.snapshot(top)]
    projection = None
    fleet = worker.fleet
    if fleet is not None:
        budget_rows += fleet.ledger.snapshot(top)
        projection = fleet.ledger.projection(now_ms)
    return build_report(
        period, now_ms, usage,
        savings=savings_for(worker, usage),
        budget_rows=budget_rows,
        projection=projection,
        alerts=worker.directory.query(),
        experiments=[row for engine in engines for row in engine.experiment_results()],
        partitions=worker.engines,
        top=top,
    )


class SavingsCollector(Collector):
    """Savings gauges computed at scrape time (the event loop's thread, like every other view)."""

    def __init__(self, worker: Worker, max_series: int = 2000) -> None:
        self.worker = worker
        self.max_series = max_series

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        from llmpulse.processors.app import now_ms

        savings, easy, cost = self._families()
        # Bounded like every other llmpulse metric.
        for row in savings_rows(self.worker, now_ms())[: self.max_series]:
            service, period = str(row["service"]), str(row["period"])
            savings.add_metric([service, period, str(row["target"] or "none")], row["savings_usd"])
            easy.add_metric([service, period], row["easy_share"])
            cost.add_metric([service, period], row["cost_usd"])
        yield from (savings, easy, cost)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("llmpulse_routing_savings_usd",
                              "Estimated saving had easy calls gone to the cheapest model, this UTC day/month",
                              labels=["service", "period", "target"]),
            GaugeMetricFamily("llmpulse_routing_easy_ratio", "Share of calls under the easy-call token thresholds",
                              labels=["service", "period"]),
            GaugeMetricFamily("llmpulse_routing_cost_usd", "Priced spend this UTC day/month (savings baseline)",
                              labels=["service", "period"]),
        )


def register_report_views(worker: Worker, app: faust.App) -> None:
    """``GET /api/report`` on the worker's web server, and the savings gauges on its registry."""
    from faust.web import Request, Response, View

    from llmpulse.processors.app import now_ms

    worker.registry.register(SavingsCollector(worker, worker.settings.max_series_per_metric))

    @app.page("/api/report")
    class ApiReport(View):
        async def get(self, request: Request) -> Response:
            period = request.query.get("period", "day")
            if period not in PERIODS:
                return self.json({"error": f"period must be one of {list(PERIODS)}"}, status=400)
            try:
                top = int(request.query.get("top", "10"))
            except ValueError:
                return self.json({"error": "top must be an integer"}, status=400)
            report = report_for(worker, period, now_ms(), max(1, min(top, MAX_TOP)))
            return self.json(report)
