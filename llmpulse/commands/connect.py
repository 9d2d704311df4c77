"""What every one-shot command does before it opens a Kafka client: read the connection settings from the
environment and check that the cluster answers. A problem ends the command with one line on stderr (which servers,
why, what to do) and a non-zero exit code: 2 for a setting that is wrong in itself, 1 for a cluster that cannot be
used."""

from __future__ import annotations

import typer

from llmpulse.config import KafkaSecurity, KafkaSettingsError, bootstrap_servers
from llmpulse.connection import KafkaUnavailable, check_connection

CHECK_TIMEOUT_S = 10.0


def kafka_or_exit(timeout: float = CHECK_TIMEOUT_S) -> tuple[str, KafkaSecurity]:
    """``KAFKA_BOOTSTRAP_SERVERS`` and the security settings, once the cluster answers with them."""
    try:
        security = KafkaSecurity.from_env()
    except KafkaSettingsError as exc:
        typer.echo(f"llmpulse: {exc}", err=True)
        raise typer.Exit(2) from None
    bootstrap = bootstrap_servers()
    try:
        check_connection(bootstrap, security, timeout)
    except KafkaUnavailable as exc:
        typer.echo(f"llmpulse: {exc}", err=True)
        raise typer.Exit(1) from None
    return bootstrap, security
