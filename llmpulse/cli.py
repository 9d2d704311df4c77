"""The ``llmpulse`` command: one entry point, one sub-command module per concern under ``commands/``."""

from __future__ import annotations

import sys


def _build():  # type: ignore[no-untyped-def]
    import typer

    from llmpulse.commands import register_all

    app = typer.Typer(
        help=(
            "llmpulse: streaming observability and guardrails for LLM traffic on Apache Kafka.\n\n"
            "Kafka is found through KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092); every other setting "
            "uses the LLMPULSE_ prefix (see README)."
        ),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    register_all(app)
    return app


def main() -> None:
    try:
        app = _build()
    except ImportError as exc:
        sys.stderr.write(
            f"llmpulse: the command line needs the processor extra ({exc.name} is missing).\n"
            "Install it with: pip install 'llmpulse[processor]'\n"
        )
        raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    main()
