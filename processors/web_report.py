"""Worker side of reports and routing savings: ``GET /api/report`` and the savings gauges.

GET /api/report?period=day|week|month&top=10   the usage report of this worker's partitions (processors/report.py)

Health scores (processors/core/health.py) and business KPIs (processors/core/kpis.py) are computed here too, when
asked, for ``GET /api/metrics`` and the report; the exporter's health gauges come from the same function.

Savings are computed when asked (a scrape, an API call) from the engines' daily usage, never on the hot path:
``savings_rows`` feeds ``GET /api/metrics`` and ``SavingsCollector`` the Prometheus gauges
``llmpulse_routing_savings_usd``, ``llmpulse_routing_easy_ratio`` and ``llmpulse_routing_cost_usd``
(labels service, period, and target for the savings).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmpulse.processors.alert_directory import AlertDirectory
from llmpulse.processors.clock import now_ms
from llmpulse.processors.core.health import HealthConfig, service_health
from llmpulse.processors.core.kpis import Kpi, kpi_rows
from llmpulse.processors.core.savings import RateLookup, SavingsTracker, ServiceSavings, Usage, estimate_savings
from llmpulse.processors.engine_store import EngineViews
from llmpulse.processors.report import PERIODS, build_report, period_bounds

SAVINGS_PERIODS = ("day", "month")
MAX_TOP = 100


class Reports:
    """Reports, savings, health and KPIs from this worker's engines (read-only), its price table and the alert
    directory."""

    def __init__(self, engines: EngineViews, rate: RateLookup, directory: AlertDirectory,
                 health: HealthConfig | None = None, kpis: tuple[Kpi, ...] = ()) -> None:
        self.engines = engines
        self.rate = rate
        self.directory = directory
        self.health = health or HealthConfig()
        self.kpis = kpis

    def _trackers(self) -> list[SavingsTracker]:
        # getattr: an engine built without a tracker (older wiring) simply contributes no usage.
        found = (getattr(engine, "savings", None) for engine in self.engines.all_engines())
        return [tracker for tracker in found if tracker is not None]

    def period_usage(self, period: str, now_ms: int, counts_only: bool = False) -> Usage:
        start, end = period_bounds(period, now_ms)
        return Usage.collect(self._trackers(), start, end + 1, counts_only)

    def savings_for(self, usage: Usage) -> list[ServiceSavings]:
        trackers = self._trackers()
        targets = trackers[0].config.target_models if trackers else ()
        return estimate_savings(usage, self.rate, targets)

    def savings_rows(self, now_ms: int) -> list[dict[str, Any]]:
        """Per service and period (day, month): the routing estimate, for ``GET /api/metrics``."""
        rows = []
        for period in SAVINGS_PERIODS:
            for saving in self.savings_for(self.period_usage(period, now_ms, counts_only=True)):
                rows.append({"period": period, **saving.as_dict()})
        return rows

    def health_rows(self, now_ms: int) -> list[dict[str, Any]]:
        """Per service: health score, components and spend per 1,000 requests over the health window."""
        return service_health(self.engines.all_engines(), now_ms, self.health)

    def kpi_rows(self, now_ms: int) -> list[dict[str, Any]]:
        """Per KPI and period (day, month): spend per outcome, for ``GET /api/metrics``."""
        if not self.kpis:
            return []
        return [{"period": period, **row} for period in SAVINGS_PERIODS
                for row in kpi_rows(self.period_usage(period, now_ms, counts_only=True), self.kpis)]

    def report(self, period: str, now_ms: int, top: int = 10) -> dict[str, Any]:
        usage = self.period_usage(period, now_ms)
        engines = self.engines.all_engines()  # calls partitions' engines and, with OTLP ingest, the OTLP ones
        budget_rows = [row for engine in engines for row in engine.budget.snapshot(top)]
        projection = None
        fleet = self.engines.loaded_fleet()
        if fleet is not None:
            budget_rows += fleet.ledger.snapshot(top)
            projection = fleet.ledger.projection(now_ms)
        return build_report(
            period, now_ms, usage,
            savings=self.savings_for(usage),
            budget_rows=budget_rows,
            projection=projection,
            alerts=self.directory.query(),
            experiments=[row for engine in engines for row in engine.experiment_results()],
            partitions=self.engines.engines(),
            top=top,
            health=self.health_rows(now_ms),
            kpis=self.kpis,
        )


class SavingsCollector(Collector):
    """Savings gauges computed at scrape time (the event loop's thread, like every other view)."""

    def __init__(self, reports: Reports, max_series: int = 2000) -> None:
        self.reports = reports
        self.max_series = max_series

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        savings, easy, cost = self._families()
        # Bounded like every other llmpulse metric.
        for row in self.reports.savings_rows(now_ms())[: self.max_series]:
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


def register_report_views(app: faust.App, reports: Reports, registry: CollectorRegistry, max_series: int) -> None:
    """``GET /api/report`` on the worker's web server, and the savings gauges on ``registry``."""
    registry.register(SavingsCollector(reports, max_series))

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
            report = reports.report(period, now_ms(), max(1, min(top, MAX_TOP)))
            return self.json(report)
