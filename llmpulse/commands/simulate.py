"""``llmpulse simulate``: realistic LLM traffic, with incidents on demand, sent through the SDK to Kafka."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from llmpulse.producers.simulation.scenarios import Scenario
    from llmpulse.producers.simulation.simulator import CallSource, SimulationSummary

DEFAULT_DURATION_S = 60.0
RECOVERY_S = 60.0  # baseline traffic after the last scenario, so its alerts can start resolving


def _scenario_help() -> str:
    from llmpulse.producers.simulation.scenarios import SCENARIOS

    lines = [f"{s.name} (at {s.start_s:g} s for {s.duration_s:g} s): {s.description}" for s in SCENARIOS.values()]
    return "Scenarios:\n\n" + "\n\n".join(lines)


def _list_scenarios() -> None:
    from rich.console import Console
    from rich.table import Table

    from llmpulse.producers.simulation.scenarios import SCENARIOS

    table = Table("scenario", "start", "duration", "what happens")
    for s in SCENARIOS.values():
        table.add_row(s.name, f"{s.start_s:g} s", f"{s.duration_s:g} s", s.description)
    Console().print(table)


def _chosen_scenarios(names: list[str], start: float | None, duration: float | None) -> list[Scenario]:
    from llmpulse.producers.simulation.scenarios import get, parse_names

    try:
        return [get(name, start, duration) for name in parse_names(names)]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from None


def _source(trace: Path | None, speedup: float, limit: int | None, model: Any, seed: int | None) -> CallSource | None:
    if trace is None:
        return None
    import numpy as np

    from llmpulse.producers.simulation.simulator import TraceSource
    from llmpulse.producers.simulation.trace_replay import read_trace

    try:
        parsed = read_trace(trace, limit=limit)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--trace") from None
    if not len(parsed):
        raise typer.BadParameter(f"{trace}: no readable request", param_hint="--trace")
    if parsed.skipped:
        typer.echo(f"{trace}: skipped {parsed.skipped} malformed line(s)", err=True)
    return TraceSource(parsed, model, np.random.default_rng(seed), speedup=speedup)


def _duration(given: float | None, replay: bool, chosen: list[Scenario]) -> float | None:
    """--duration, else the whole trace, else 60 s or long enough to see every scenario end and recover."""
    last_end = max((s.start_s + s.duration_s for s in chosen), default=0.0)
    if given is not None:
        if given < last_end:
            typer.echo(f"note: the run ends at {given:g} s, before the scenarios end ({last_end:g} s)", err=True)
        return given
    if replay:
        return None
    return max(DEFAULT_DURATION_S, last_end + RECOVERY_S)


def simulate(
    rate: Annotated[float, typer.Option(help="Calls per second (built-in model).", min=0.01)] = 50.0,
    duration: Annotated[
        float | None,
        typer.Option(help="Seconds to run [default: 60 s, the last scenario's end + 60 s, or the whole trace].",
                     min=0.0),
    ] = None,
    trace: Annotated[
        Path | None, typer.Option(help="Replay a trace: Azure CSV, Mooncake JSONL or llm_call JSONL.")
    ] = None,
    speedup: Annotated[float, typer.Option(help="Replay the trace this many times faster.", min=1e-3)] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Replay at most this many trace requests.", min=1)] = None,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Incident to inject (repeatable or comma-separated).")
    ] = None,
    scenario_start: Annotated[float | None, typer.Option(help="Seconds into the run every scenario starts.")] = None,
    scenario_duration: Annotated[float | None, typer.Option(help="Seconds every scenario lasts.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a reproducible run.")] = None,
    services: Annotated[
        str | None, typer.Option(help="Comma-separated services to simulate [default: all].")
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", "--no-wait", help="Do not pace: send at once, timestamps over the duration.")
    ] = False,
    redact_pii: Annotated[bool, typer.Option(help="Let the SDK redact PII in captured text.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON; no progress bar.")] = False,
    list_scenarios: Annotated[bool, typer.Option("--list-scenarios", help="List the scenarios and exit.")] = False,
) -> None:
    """Send simulated LLM calls through the SDK, in real time (or --fast), optionally with incidents."""
    if list_scenarios:
        _list_scenarios()
        return
    from llmpulse.producers.client import Pulse
    from llmpulse.producers.simulation.simulator import simulate as run
    from llmpulse.producers.simulation.traffic_model import TrafficModel

    chosen = _chosen_scenarios(scenario or [], scenario_start, scenario_duration)
    model = TrafficModel.load()
    if services:
        try:
            model = model.restricted(name.strip() for name in services.split(",") if name.strip())
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--services") from None
    source = _source(trace, speedup, limit, model, seed)
    run_for = _duration(duration, source is not None, chosen)
    from llmpulse.commands.connect import kafka_or_exit

    bootstrap, security = kafka_or_exit()  # the SDK would only buffer: say now that Kafka is not there
    pulse = Pulse(service="llmpulse-simulator", bootstrap_servers=bootstrap, kafka=security, capture_text=True,
                  redact_pii=redact_pii)
    try:
        kwargs: dict[str, Any] = {"model": model, "scenarios": chosen, "duration_s": run_for, "rate": rate,
                                  "fast": fast, "seed": seed, "source": source}
        if as_json:
            summary = run(pulse, **kwargs)
        else:
            summary = _run_with_progress(run, pulse, kwargs, source.duration_s if source else run_for)
    except KeyboardInterrupt:
        typer.echo("interrupted; flushing what was recorded", err=True)
        pulse.close()
        raise typer.Exit(130) from None
    pulse.close()
    summary.sdk = pulse.stats()
    if as_json:
        sys.stdout.write(json.dumps(summary.as_dict()) + "\n")
    else:
        _print_summary(summary)


def _run_with_progress(run: Any, pulse: Any, kwargs: dict[str, Any], total_s: float | None) -> SimulationSummary:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    limits = [t for t in (total_s, kwargs["duration_s"]) if t is not None]
    total = min(limits) if limits else None
    columns = (TextColumn("[bold]simulating"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
               TextColumn("{task.fields[calls]} calls"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("simulate", total=total, calls=0)
        return run(pulse, **kwargs, progress=lambda t, s: bar.update(task, completed=t, calls=s.recorded))


def _print_summary(summary: SimulationSummary) -> None:
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table

    from llmpulse.producers.batching import STATUS_SYMBOLS

    console = Console()
    present = {status for _, status in summary.by_service_status}
    statuses = [s for s in STATUS_SYMBOLS if s in present]
    table = Table("service", *statuses, "total", title="calls sent")
    for service in sorted({service for service, _ in summary.by_service_status}):
        counts = [summary.by_service_status.get((service, status), 0) for status in statuses]
        table.add_row(service, *map(str, counts), str(sum(counts)))
    console.print(table)
    if summary.scenarios:
        windows = Table("scenario", "from (UTC)", "to (UTC)", "calls changed", title="scenario windows")
        for w in summary.scenarios:
            start, end = (datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S") for ms in (w.start_ms, w.end_ms))
            windows.add_row(w.name, start, end, str(w.calls))
        console.print(windows)
    sdk = summary.sdk
    if sdk is not None:
        dropped = sdk.dropped_buffer_full + sdk.dropped_delivery_failed + sdk.dropped_encoding
        console.print(f"SDK: recorded {sdk.recorded}, delivered {sdk.delivered}, dropped {dropped}, "
                      f"pending {sdk.pending}, broker errors {sdk.broker_errors}; {summary.wall_s:.1f} s wall time")


def register(app: typer.Typer) -> None:
    app.command("simulate", epilog=_scenario_help())(simulate)
