"""``llmpulse broker start|stop|status``: a real single-node Kafka broker on this machine, no Docker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmpulse.broker import KAFKA_VERSION, BrokerConfig, BrokerError, BrokerStatus, LocalBroker
from llmpulse.broker_security import ADMIN, USERS

_console = Console()
_err = Console(stderr=True)

PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        "-p",
        help="Client port (the controller takes port+1). Default: $LLMPULSE_BROKER_PORT or 9092.",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Config, logs, pid file and topic data. Default: ~/.cache/llmpulse/broker-<port>.",
        show_default=False,
        file_okay=False,
    ),
]
SecureOption = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="A SASL_SSL listener with SCRAM users and a local CA (files in <data dir>/secure) instead of "
        "PLAINTEXT. Default data dir: ~/.cache/llmpulse/broker-<port>-secure.",
    ),
]


def _broker(port: int | None, data_dir: Path | None, secure: bool, **overrides: object) -> LocalBroker:
    return LocalBroker(BrokerConfig.from_env(port=port, data_dir=data_dir, secure=secure, **overrides))


def _fail(exc: BrokerError) -> typer.Exit:
    _err.print(f"[bold red]broker error:[/] {exc}", highlight=False)
    return typer.Exit(code=1)


def _show(status: BrokerStatus) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    state = "[green]running[/]" if status.running else "[yellow]stopped[/]"
    if status.running and not status.answering:
        state = "[yellow]running, not answering yet[/]"
    table.add_row("state", state)
    table.add_row("pid", str(status.pid) if status.pid else "-")
    table.add_row("bootstrap", status.bootstrap)
    table.add_row("kafka", status.version)
    table.add_row("data dir", str(status.data_dir))
    _console.print(table)


def start(
    port: PortOption = None,
    data_dir: DataDirOption = None,
    partitions: Annotated[int, typer.Option(help="Partitions of auto-created topics.", min=1)] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker to answer.", min=1)] = 60.0,
    secure: SecureOption = False,
) -> None:
    """Start the broker in the background (fetching the Kafka jars with Maven on first use) and wait for it.

    A broker already running on the same data dir is left as it is. Needs Java 17+ and Maven on PATH.
    """
    broker = _broker(port, data_dir, secure, num_partitions=partitions, start_timeout=timeout)
    began = time.monotonic()
    try:
        with _console.status(f"starting Kafka {KAFKA_VERSION} on {broker.config.bootstrap} ..."):
            status = broker.start()
    except BrokerError as exc:
        raise _fail(exc) from None
    _console.print(f"[green]Kafka {status.version} answers on {status.bootstrap}[/] "
                   f"(pid {status.pid}, {time.monotonic() - began:.1f} s)")
    _console.print(f"log: {broker.log_file}")
    _console.print(f"use it with: export KAFKA_BOOTSTRAP_SERVERS={status.bootstrap}", highlight=False)
    secured = broker.secure
    if secured is not None:
        roles = ", ".join(str(secured.env_file(user)) for user in USERS if user != ADMIN)
        _console.print(f"and, as the admin user (SASL_SSL, SCRAM-SHA-512): source {secured.env_file()}\n"
                       f"one login per role (no ACLs are enforced yet): {roles}", highlight=False)


def stop(port: PortOption = None, data_dir: DataDirOption = None, secure: SecureOption = False) -> None:
    """Stop the broker (clean shutdown, killed after 30 s). Topic data stays in the data dir."""
    broker = _broker(port, data_dir, secure)
    try:
        stopped = broker.stop()
    except BrokerError as exc:
        raise _fail(exc) from None
    if stopped:
        _console.print(f"[green]stopped[/] the broker on {broker.config.bootstrap}")
    else:
        _console.print(f"no broker was running for {broker.config.data_dir}")


def status(port: PortOption = None, data_dir: DataDirOption = None, secure: SecureOption = False) -> None:
    """Show whether the broker runs and answers. Exit code 0 when it answers, 3 otherwise (for scripts)."""
    try:
        current = _broker(port, data_dir, secure).status()
    except BrokerError as exc:
        raise _fail(exc) from None
    _show(current)
    if not current.answering:
        raise typer.Exit(code=3)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help=(
            f"Run a local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) for development and tests. "
            "Jars are fetched once from Maven Central into ~/.cache/llmpulse (override with "
            "LLMPULSE_BROKER_HOME); needs Java 17+ and Maven."
        ),
        no_args_is_help=True,
    )
    sub.command()(start)
    sub.command()(stop)
    sub.command()(status)
    app.add_typer(sub, name="broker")
