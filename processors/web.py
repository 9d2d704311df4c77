"""The worker's HTTP API (faust's web server, one per process, port LLMPULSE_WEB_PORT).

GET  /metrics                      Prometheus text format
GET  /health/live, /health/ready   liveness; readiness once assigned partitions are recovered
GET  /api/metrics                  JSON summary per service/model from this worker's partitions: series figures,
                                   health score per service with its components and spend per 1,000 requests
                                   (``health``), business KPIs per day and month (``kpis``), experiments, savings
GET  /api/alerts?status=&severity= every member alert known on the alerts topic (same answer on every worker)
GET  /api/incidents?status=        every incident on the alerts topic, with its members (status: open, or one
                                   of opened/escalated/updated/acknowledged/resolved)
GET  /api/budgets                  exact spend (integer micro-dollars) of this worker's ledgers; read-only
POST /api/alerts/{alert_id}/acknowledge   an alert, or an incident and its members; bearer token required
                                   (401 missing, 403 wrong or unset)
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from pydantic import SecretStr

from llmpulse.processors.alert_directory import AlertDirectory
from llmpulse.processors.clock import now_ms
from llmpulse.processors.emitter import Emitter
from llmpulse.processors.engine_store import EngineViews
from llmpulse.processors.exporter import MetricsExporter
from llmpulse.processors.metrics_text import MetricsText
from llmpulse.processors.ownership import PartitionOwnership
from llmpulse.processors.web_report import Reports

MAX_BODY_BYTES = 16 * 1024
BUDGET_TOP = 1000  # keys per scope and period in /api/budgets
_STATUSES = {"firing", "acknowledged", "resolved"}
_INCIDENT_STATUSES = {"open", "opened", "escalated", "updated", "acknowledged", "resolved"}
_SEVERITIES = {"INFO", "WARNING", "ERROR", "CRITICAL"}


@dataclass(frozen=True, slots=True)
class ApiParts:
    """What the HTTP API uses: engines read-only, readiness and fleet ownership, the directory of alerts, the
    emitter for operator commands, the metrics to refresh and serve, and the token that guards mutations."""

    engines: EngineViews
    ownership: PartitionOwnership
    directory: AlertDirectory
    emitter: Emitter
    exporter: MetricsExporter
    registry: CollectorRegistry
    reports: Reports
    api_token: SecretStr | None


def check_token(configured: SecretStr | None, header: str | None) -> tuple[int, str] | None:
    """None when the bearer token matches the configured one, else (HTTP status, reason)."""
    if not header or not header.startswith("Bearer "):
        return 401, "missing bearer token (Authorization: Bearer <LLMPULSE_API_TOKEN>)"
    if configured is None or not configured.get_secret_value():  # an empty token would match "Bearer "
        return 403, "mutations are disabled: no LLMPULSE_API_TOKEN is configured on this worker"
    if not hmac.compare_digest(header[len("Bearer "):].encode(), configured.get_secret_value().encode()):
        return 403, "wrong bearer token"
    return None


def register_views(app: faust.App, api: ApiParts) -> None:
    engines, ownership, directory = api.engines, api.ownership, api.directory

    page = MetricsText()  # keeps label sets' text between scrapes

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            api.exporter.refresh(engines.all_engines(), engines.loaded_fleet(), now_ms())
            response = self.bytes(page.render(api.registry))
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response

    @app.page("/health/live")
    class Live(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "live"})

    @app.page("/health/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready = ownership.ready()
            if ready:
                return self.json({"ready": True})
            return self.json({"ready": False, "recovery_offsets_left": ownership.recovery_left()}, status=503)

    @app.page("/api/metrics")
    class ApiMetrics(View):
        async def get(self, request: Request) -> Response:
            now = now_ms()
            built = engines.all_engines()  # the calls partitions' engines and, with OTLP ingest, the OTLP ones
            series = [row for engine in built for row in engine.summary(now)]
            return self.json({"generated_at_ms": now, "partitions": sorted(engines.engines()), "series": series,
                              "health": api.reports.health_rows(now), "kpis": api.reports.kpi_rows(now),
                              "experiments": [r for e in built for r in e.experiment_results()],
                              "savings": api.reports.savings_rows(now)})

    @app.page("/api/budgets")
    class ApiBudgets(View):
        """Read-only: the fleet ledger (when this worker owns the fleet partition) and every partition ledger.
        Global and model spend live in the fleet ledger; service and user spend in the partition ledgers, and
        the fleet's rows for those two scopes are its copy for the budget-state topic (do not add them up)."""

        async def get(self, request: Request) -> Response:
            # fleet_view: the fleet ledger without caching an engine (a view must not pin state mid-recovery)
            fleet = engines.fleet_view().ledger.snapshot(top=BUDGET_TOP) if ownership.owns_fleet() else None
            partitions = {  # calls partitions by number; OTLP partitions as "otlp:<number>"
                f"{engine.lane}:{engine.partition}" if engine.lane else str(engine.partition):
                    engine.budget.snapshot(top=BUDGET_TOP)
                for engine in sorted(engines.all_engines(), key=lambda e: (e.lane, e.partition))
            }
            body = {"generated_at_ms": now_ms(), "ready": ownership.ready(), "fleet": fleet,
                    "partitions": partitions}
            return self.json(body)

    @app.page("/api/alerts")
    class ApiAlerts(View):
        async def get(self, request: Request) -> Response:
            status = request.query.get("status")
            severity = request.query.get("severity")
            if status is not None and status not in _STATUSES:
                return self.json({"error": f"status must be one of {sorted(_STATUSES)}"}, status=400)
            if severity is not None and severity.upper() not in _SEVERITIES:
                return self.json({"error": f"severity must be one of {sorted(_SEVERITIES)}"}, status=400)
            alerts = directory.query(status, severity.upper() if severity else None)
            return self.json({"alerts": alerts, "count": len(alerts)})

    @app.page("/api/incidents")
    class ApiIncidents(View):
        async def get(self, request: Request) -> Response:
            status = request.query.get("status")
            if status is not None and status not in _INCIDENT_STATUSES:
                return self.json({"error": f"status must be one of {sorted(_INCIDENT_STATUSES)}"}, status=400)
            incidents = directory.incidents(status)
            return self.json({"incidents": incidents, "count": len(incidents)})

    @app.page("/api/alerts/{alert_id}/acknowledge")
    class Acknowledge(View):
        async def post(self, request: Request, alert_id: str) -> Response:
            refused = check_token(api.api_token, request.headers.get("Authorization"))
            if refused:
                return self.json({"error": refused[1]}, status=refused[0])
            body: dict[str, Any] = {}
            raw = await request.content.read(MAX_BODY_BYTES + 1)  # type: ignore[attr-defined]
            if len(raw) > MAX_BODY_BYTES:
                return self.json({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status=413)
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return self.json({"error": "body must be JSON"}, status=400)
            known = directory.get(alert_id)
            if known is None:
                return self.json({"error": f"no alert or incident {alert_id!r} on the alerts topic"}, status=404)
            actor = str(body.get("actor", "api"))[:128] if isinstance(body, dict) else "api"
            targets = [(alert_id, known.partition)]
            if known.kind == "incident":  # its members are acknowledged where they live
                for member in known.record["members"]:
                    member_known = directory.get(member["alert_id"])
                    if member_known is not None and member["status"] != "resolved":
                        targets.append((member["alert_id"], member_known.partition))
            for target, partition in targets:
                await api.emitter.send_command(target, "acknowledge", actor, partition)
            return self.json({"alert_id": alert_id, "kind": known.kind, "status": "acknowledge requested",
                              "actor": actor, "members": [t for t, _ in targets[1:]]}, status=202)
