"""``llmpulse report``: spend, tokens, latency, errors, budgets, alerts, routing savings, health and KPIs.

The figures come from a worker's ``GET /api/report`` (the state the workers keep, no second pipeline) and are
printed as a terminal report, JSON or Markdown.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

FORMATS = ("table", "json", "markdown")
HEALTH_COMPONENTS = ("latency", "errors", "drift", "guard", "quality")  # processors/core/health.py
PERIODS = ("day", "week", "month")


def fetch_report(url: str, period: str, top: int, timeout: float = 30.0) -> dict[str, Any]:
    query = urllib.parse.urlencode({"period": period, "top": top})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/report?{query}", timeout=timeout) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def report(
    period: Annotated[str, typer.Argument(help="day, week (ISO, from Monday) or month; UTC, up to now.")] = "day",
    url: Annotated[str, typer.Option(help="Any worker's HTTP address.")] = "http://127.0.0.1:6066",
    output_format: Annotated[str, typer.Option("--format", help="table, json or markdown.")] = "table",
    top: Annotated[int, typer.Option(help="Rows in the top-N tables.", min=1, max=100)] = 10,
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of the terminal.")] = None,
) -> None:
    """Usage report for a day, week or month, from a worker's state."""
    if period not in PERIODS:
        raise typer.BadParameter(f"must be one of {', '.join(PERIODS)}", param_hint="PERIOD")
    if output_format not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    try:
        data = fetch_report(url, period, top)
    except urllib.error.HTTPError as exc:
        typer.echo(f"worker refused ({exc.code}): {exc.read().decode(errors='replace')}", err=True)
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        from llmpulse.commands.alerts import WORKER_ADVICE

        typer.echo(f"llmpulse: cannot reach a worker at {url}: {getattr(exc, 'reason', exc)}; {WORKER_ADVICE}",
                   err=True)
        raise typer.Exit(1) from None
    if output_format == "json":
        text = json.dumps(data, indent=2) + "\n"
    elif output_format == "markdown":
        text = to_markdown(data)
    else:
        _print_rich(data, output)
        return
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


# ---- shared cell formatting ---------------------------------------------------------------------------
def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _component(row: dict[str, Any], name: str) -> str:
    """A health component's score (0..1) as a percentage; "-" when it had no signal."""
    component = row["components"].get(name)
    return "-" if component is None else f"{component['score']:.0%}"


def _latency(row: dict[str, Any]) -> list[str]:
    return [_ms(row["latency_ms"].get(q)) for q in ("p50", "p95", "p99")]


def _sections(data: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the terminal and the Markdown renderings."""
    t = data["totals"]
    totals = [("requests", f"{t['requests']:,}"), ("spend", _usd(t["cost_usd"])),
              ("input / output tokens", f"{t['input_tokens']:,} / {t['output_tokens']:,}"),
              ("tokens per request", f"{t['tokens_per_request']:,.0f}"), ("error rate", _pct(t["error_ratio"])),
              ("latency p50 / p95 / p99", " / ".join(_latency(t))),
              ("unpriced requests", f"{t['unpriced_requests']:,}")]
    sections = [("Totals", ["figure", "value"], [list(pair) for pair in totals])]
    sections.append(("Services", ["service", "requests", "spend", "per 1k req", "tokens/req", "error rate", "p50",
                                  "p95", "p99"],
                     [[s["service"], f"{s['requests']:,}", _usd(s["cost_usd"]),
                       _usd(s.get("cost_per_1k_requests_usd")), f"{s['tokens_per_request']:,.0f}",
                       _pct(s["error_ratio"]), *_latency(s)] for s in data["services"]]))
    sections.append(("Top models by cost", ["model", "provider", "requests", "spend", "per 1k req", "share",
                                            "error rate", "p95"],
                     [[m["model"], m["provider"], f"{m['requests']:,}", _usd(m["cost_usd"]),
                       _usd(m.get("cost_per_1k_requests_usd")), _pct(m["cost_share"]), _pct(m["error_ratio"]),
                       _ms(m["latency_ms"].get("p95"))] for m in data["models"]]))
    sections.append(("Business KPIs (spend per outcome over the period)",
                     ["kpi", "outcome", "spend", "outcomes", "per outcome"],
                     [[k["name"], k["outcome"], _usd(k["cost_usd"]), f"{k['outcomes']:,}",
                       _usd(k["cost_per_outcome_usd"])] for k in data.get("kpis", [])]))
    health = data.get("health", [])
    window = health[0]["window"] if health else "window"
    sections.append((f"Health now (score 0-100 over the last {window}; components 100% = within threshold)",
                     ["service", "score", "latency", "errors", "drift", "guard", "quality", "requests",
                      "per 1k req"],
                     [[h["service"], _score(h["score"]), *(_component(h, c) for c in HEALTH_COMPONENTS),
                       f"{h['requests']:,}", _usd(h["cost_per_1k_requests_usd"])] for h in health]))
    sections.append(("Top users by cost", ["user", "service", "spend"],
                     [[u["user"], u["service"], _usd(u["cost_usd"])] for u in data["users"]]))
    sections.append(("Budgets", ["scope", "key", "period", "spent", "limit", "used"],
                     [[b["scope"], str(b["key"]), b["period"], _usd(b["spent_usd"]), _usd(b["limit_usd"]),
                       _pct(b["used_ratio"])] for b in data["budgets"]]))
    sections.append(("Model-routing savings (easy calls to the cheapest model)",
                     ["service", "target", "easy share", "spend", "easy spend", "routed", "saving", "of spend"],
                     [[s["service"], s["target"] or "-", _pct(s["easy_share"]), _usd(s["cost_usd"]),
                       _usd(s["easy_cost_usd"]), _usd(s["routed_easy_cost_usd"]), _usd(s["savings_usd"]),
                       _pct(s["savings_ratio"])] for s in data["savings"]]))
    alerts = data["alerts"]
    sections.append((f"Alerts fired: {alerts['fired']} ({alerts['open']} still open)",
                     ["started (UTC)", "severity", "rule", "status", "summary"],
                     [[_when(a["started_at_ms"]), a["severity"], a["rule"], a["status"],
                       a["summary"]] for a in alerts["recent"]]))
    return sections


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M")


def _projection_line(data: dict[str, Any]) -> str | None:
    p = data.get("projection")
    if not p:
        return None
    note = "" if p["reliable"] else " (early in the month: indicative only)"
    over = " - OVER the limit" if p["over_limit"] else ""
    return (f"Month-end projection: {_usd(p['projected_usd'])} (spent {_usd(p['spent_usd'])}, "
            f"limit {_usd(p['limit_usd'])}){over}{note}")


def _title(data: dict[str, Any]) -> str:
    parts = ", ".join(map(str, data["partitions"])) or "none"
    start, end = (data[k][:16].replace("T", " ") for k in ("start", "end"))
    return f"llmpulse {data['period']} report, {start} to {end} UTC (calls partitions {parts})"


def to_markdown(data: dict[str, Any]) -> str:
    lines = [f"# {_title(data)}", ""]
    projection = _projection_line(data)
    if projection:
        lines += [projection, ""]
    for title, header, rows in _sections(data):
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["(none)", ""]
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def _print_rich(data: dict[str, Any], output: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    handle = output.open("w", encoding="utf-8") if output is not None else None
    try:
        console = Console(file=handle, width=160) if handle else Console()
        console.rule(f"[bold]{_title(data)}")
        for title, header, rows in _sections(data):
            table = Table(*header, title=title, title_justify="left", title_style="bold")
            for row in rows:
                table.add_row(*row)
            if rows:
                console.print(table)
            else:
                console.print(f"[bold]{title}[/bold]: [dim]none[/dim]")
        projection = _projection_line(data)
        if projection:
            console.print(projection)
    finally:
        if handle is not None:
            handle.close()


def register(app: typer.Typer) -> None:
    app.command("report")(report)
