"""What `llmpulse alerts tail` shows: incidents with their member alerts folded under them, without Kafka."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from llmpulse.commands import alerts as alerts_command
from llmpulse.commands.alerts import TailView
from llmpulse.processors.core.incidents import IncidentManager

T0 = 1_700_000_000_000


def alert(n: int, status: str = "firing", severity: str = "CRITICAL", updated: int = T0) -> dict[str, Any]:
    return {
        "alert_id": f"a{n}", "fingerprint": f"error_rate|svc{n}", "rule": "error_rate", "severity": severity,
        "priority": {"CRITICAL": "P0", "WARNING": "P2", "INFO": "P3"}[severity], "status": status,
        "service": f"svc{n}", "model": f"claude-{n}", "provider": "anthropic", "summary": f"svc{n} error rate 40%",
        "observed": 0.4, "threshold": 0.05, "window": "5m", "started_at_ms": T0, "updated_at_ms": updated,
        "mitigation": "fail over", "acknowledged_by": None, "labels": {},
    }


def incident_of(*alerts: dict[str, Any]) -> dict[str, Any]:
    """The incident the worker would write for these member alerts (CRITICAL: announced at once)."""
    [event] = IncidentManager().apply(alerts)
    return event.to_record()


def screen(entries: list[str]) -> list[str]:
    """The entries as a terminal shows them (markup rendered, no colour)."""
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, soft_wrap=True)
    for entry in entries:
        console.print(entry)
    return out.getvalue().splitlines()


def test_one_incident_line_with_its_first_members_folded_under_it() -> None:
    members = [alert(n) for n in range(1, 6)]
    incident = incident_of(*members)
    view = TailView()

    printed = [line for record in members for line in view.add("alert", record, now=0.0)]
    printed += view.add("incident", incident, now=1.0)
    printed += view.flush()  # the member alerts were folded, none is left to print on its own

    lines = screen(printed)
    assert len(lines) == 6  # the incident, its mitigation, three members, "... and 2 more"
    head = lines[0]
    for shown in ("CRITICAL", "P0", "opened", "provider=anthropic", incident["summary"], "(5 alerts)",
                  f"id={incident['incident_id']}"):
        assert shown in head
    assert lines[1].strip() == "mitigation: " + incident["mitigation"]
    assert [line.split()[-1] for line in lines[2:5]] == ["id=a1", "id=a2", "id=a3"]
    assert lines[5].strip() == "... and 2 more"
    assert view.shown == 1


def test_later_member_events_of_a_shown_incident_are_not_printed_on_their_own() -> None:
    view = TailView()
    view.add("incident", incident_of(alert(1)), now=0.0)

    assert view.add("alert", alert(1, "resolved", updated=T0 + 60_000), now=1.0) == []
    assert view.flush() == []


def test_an_alert_no_incident_lists_is_held_then_printed_dimmed_never_dropped() -> None:
    view = TailView(hold_s=30)
    assert view.add("alert", alert(9, severity="WARNING"), now=0.0) == []

    assert view.flush(now=10.0) == []  # still waiting for its incident
    [late, mitigation] = screen(view.flush(now=31.0))
    assert "error_rate" in late and "id=a9" in late and late.endswith("(in no incident yet)")
    assert mitigation.strip() == "mitigation: fail over"

    view.add("alert", alert(8), now=40.0)
    assert any("id=a8" in line for line in screen(view.flush()))  # stopping prints whatever is held


def test_members_option_prints_every_member_alert_and_incident_lines_alone() -> None:
    members = [alert(1), alert(2)]
    incident = incident_of(*members)
    view = TailView(members=True)

    printed = [line for record in members for line in view.add("alert", record, now=0.0)]
    printed += view.add("incident", incident, now=0.0)
    printed += view.add("alert", alert(1, "resolved", updated=T0 + 60_000), now=0.0)

    lines = screen(printed)
    assert ["id=a1" in line for line in lines if "error_rate" in line] == [True, False, True]
    assert sum("id=a2" in line for line in lines) == 1
    assert any(f"id={incident['incident_id']}" in line and "(2 alerts)" in line for line in lines)
    assert f"incident={incident['incident_id']}" in lines[-1]  # a member known to belong says where
    assert view.shown == 4


def test_json_prints_every_record_of_both_kinds_with_its_kind() -> None:
    incident = incident_of(alert(1))
    view = TailView(as_json=True)

    printed = view.add("alert", alert(1), now=0.0) + view.add("incident", incident, now=0.0)

    assert [json.loads(line) for line in printed] == [{"kind": "alert", **alert(1)}, {"kind": "incident", **incident}]


def test_severity_filters_incidents_and_alerts_alike() -> None:
    view = TailView(severity="CRITICAL", members=True)
    warning = alert(2, severity="WARNING")
    warning_incident = {**incident_of(alert(2)), "severity": "WARNING", "priority": "P2"}

    assert view.add("alert", warning, now=0.0) == []
    assert view.add("incident", warning_incident, now=0.0) == []
    assert len(view.add("alert", alert(1), now=0.0)) == 1
    assert len(view.add("incident", incident_of(alert(1)), now=0.0)) == 1


@pytest.fixture
def worker_api() -> Iterator[tuple[str, list[str]]]:
    """A stand-in worker answering GET /api/incidents with one incident; records the paths asked for."""
    paths: list[str] = []
    body = json.dumps({"incidents": [incident_of(alert(1), alert(2))], "count": 1}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths
    server.shutdown()
    server.server_close()


def test_incidents_lists_what_a_worker_knows(worker_api: tuple[str, list[str]]) -> None:
    url, paths = worker_api
    app = typer.Typer()
    alerts_command.register(app)

    shown = CliRunner().invoke(app, ["alerts", "incidents", "--url", url])
    raw = CliRunner().invoke(app, ["alerts", "incidents", "--url", url, "--status", "all", "--json"])

    assert shown.exit_code == 0, shown.output
    assert "(2 alerts)" in shown.output and "id=a1" in shown.output and "1 incident (open)" in shown.output
    assert json.loads(raw.output)["count"] == 1
    assert paths == ["/api/incidents?status=open", "/api/incidents"]
