"""``llmpulse alerts``: follow the alerts topic, acknowledge an alert."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from llmpulse.config import Topics, bootstrap_servers

alerts_app = typer.Typer(help="Follow and acknowledge alerts.", no_args_is_help=True)
_COLORS = {"CRITICAL": "bold red", "ERROR": "red", "WARNING": "yellow", "INFO": "cyan"}
_RANK = {"INFO": 0, "WARNING": 1, "ERROR": 2, "CRITICAL": 3}


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


@alerts_app.command()
def tail(
    severity: Annotated[
        str | None, typer.Option(help="Only this severity or worse: INFO, WARNING, ERROR, CRITICAL.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest alert kept, not the newest.")] = False,
    max_alerts: Annotated[int, typer.Option("--max", help="Stop after this many alerts (0: never).")] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0.0,
) -> None:
    """Print alerts from the alerts topic as they arrive (Ctrl-C to stop)."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition
    from rich.console import Console

    from llmpulse import schemas
    from llmpulse.schemas.codec import DecodeError, SchemaCodec

    floor = _RANK.get((severity or "INFO").upper())
    if floor is None:
        raise typer.BadParameter(f"unknown severity {severity!r}", param_hint="--severity")
    topic = Topics().alerts
    codec = SchemaCodec(schemas.ALERT)
    console = Console(soft_wrap=True)
    consumer = Consumer({"bootstrap.servers": bootstrap_servers(), "group.id": "llmpulse-alerts-tail",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    deadline = time.monotonic() + timeout if timeout else None
    shown = 0
    try:
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        partitions = _partitions(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        if not as_json:
            console.print(f"[dim]following {topic} on {bootstrap_servers()} ({len(partitions)} partitions)[/dim]")
        while (deadline is None or time.monotonic() < deadline) and not (max_alerts and shown >= max_alerts):
            for message in consumer.consume(num_messages=100, timeout=0.5):
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        console.print(f"[red]{message.error()}[/red]")
                    continue
                try:
                    alert = codec.decode(message.value())
                except DecodeError as exc:
                    console.print(f"[red]unreadable alert record: {exc}[/red]")
                    continue
                if _RANK[alert["severity"]] < floor:
                    continue
                shown += 1
                print(json.dumps(alert), flush=True) if as_json else console.print(_line(alert))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _partitions(consumer: Any, topic: str, deadline: float | None) -> list[int]:
    """Partitions of the alerts topic, waiting for it to exist (the worker creates it)."""
    while True:
        metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return sorted(metadata.partitions)
        if deadline is not None and time.monotonic() >= deadline:
            return []
        time.sleep(0.5)


def _line(alert: dict[str, Any]) -> str:
    color = _COLORS.get(alert["severity"], "white")
    when = time.strftime("%H:%M:%S", time.localtime(alert["updated_at_ms"] / 1000))
    return (
        f"{when} [{color}]{alert['severity']:<8}[/{color}] {alert['priority']} {alert['status']:<12} "
        f"{alert['rule']:<18} {alert['summary']}  [dim]id={alert['alert_id']}[/dim]"
        + (f"\n          [dim]mitigation: {alert['mitigation']}[/dim]" if alert["status"] == "firing" else "")
    )


@alerts_app.command()
def ack(
    alert_id: Annotated[str, typer.Argument(help="The alert_id shown by `alerts tail`.")],
    url: Annotated[str, typer.Option(help="Any worker's HTTP address.")] = "http://127.0.0.1:6066",
    token: Annotated[
        str | None, typer.Option(envvar="LLMPULSE_API_TOKEN", help="Bearer token (default LLMPULSE_API_TOKEN).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who acknowledges (recorded on the alert).")] = "cli",
) -> None:
    """Acknowledge an alert through a worker's API; every worker then shows it as acknowledged."""
    import urllib.error
    import urllib.request

    if not token:
        raise typer.BadParameter("a token is required: --token or LLMPULSE_API_TOKEN", param_hint="--token")
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/alerts/{alert_id}/acknowledge",
        data=json.dumps({"actor": actor}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            typer.echo(response.read().decode())
    except urllib.error.HTTPError as exc:
        typer.echo(f"refused ({exc.code}): {exc.read().decode()}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"cannot reach {url}: {exc.reason}", err=True)
        raise typer.Exit(1) from None
