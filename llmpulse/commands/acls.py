"""``llmpulse acls``: the least-privilege Kafka ACLs of the worker, the SDK and on-call tools, for the topic names
and app id this environment configures; printed as ``kafka-acls.sh`` commands, or created with ``--apply``."""

from __future__ import annotations

from typing import Annotated

import typer

from llmpulse.broker_acls import DEFAULT_APP_ID, apply, grants, kafka_acls_commands
from llmpulse.commands.connect import kafka_or_exit
from llmpulse.config import ENV_PREFIX, Topics, env


def acls(
    app_id: Annotated[
        str | None, typer.Option(help=f"The worker's app id. Default: ${ENV_PREFIX}APP_ID or {DEFAULT_APP_ID}.",
                                 show_default=False)] = None,
    worker: Annotated[str, typer.Option(help="The worker's user name (principal User:<name>).")] = "worker",
    sdk: Annotated[str, typer.Option(help="The SDK's user name.")] = "sdk",
    oncall: Annotated[str, typer.Option(help="On-call tools' user name (alerts tail, forward, export).")] = "oncall",
    apply_them: Annotated[bool, typer.Option(
        "--apply", help="Create them on KAFKA_BOOTSTRAP_SERVERS, as the user the KAFKA_* settings name (an admin); "
        "creating an existing ACL changes nothing.")] = False,
) -> None:
    """Least-privilege ACLs for llmpulse's principals (topic names from LLMPULSE_TOPICS__* as the worker reads them)."""
    chosen = grants(Topics.from_env(), app_id or env("APP_ID", DEFAULT_APP_ID),
                    {"worker": worker, "sdk": sdk, "oncall": oncall})
    if not apply_them:
        typer.echo("\n".join(kafka_acls_commands(chosen)))
        return
    bootstrap, security = kafka_or_exit()
    try:
        created = apply(bootstrap, security, chosen)
    except Exception as exc:  # the admin client's refusal (not authorized, no authorizer): one line, exit 1
        typer.echo(f"llmpulse: could not create the ACLs on {bootstrap}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{created} ACLs in place on {bootstrap} for User:{worker}, User:{sdk} and User:{oncall}")


def register(app: typer.Typer) -> None:
    app.command("acls")(acls)
