"""``llmpulse worker``: run one stream-processing worker (faust-streaming) in the foreground."""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path
from typing import Annotated

import typer

from llmpulse.logs import logging_config


def register(app: typer.Typer) -> None:
    app.command(name="worker")(worker)


def worker(
    web_port: Annotated[
        int | None, typer.Option(help="HTTP port for /metrics, /health and /api (default LLMPULSE_WEB_PORT or 6066).")
    ] = None,
    web_host: Annotated[str | None, typer.Option(help="Address to bind the HTTP server (default 127.0.0.1).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Worker data directory (default LLMPULSE_DATA_DIR).")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")] = "info",
    print_settings: Annotated[bool, typer.Option(
        "--print-settings", help="Print every setting in effect as YAML (secrets masked) and exit.")] = False,
) -> None:
    """Consume LLM calls from Kafka, keep windowed statistics, emit alerts and serve Prometheus metrics.

    Kafka is KAFKA_BOOTSTRAP_SERVERS; thresholds come from LLMPULSE_* variables or the YAML file named by
    LLMPULSE_CONFIG_FILE (see README). Stops cleanly on Ctrl-C or SIGTERM; state is recovered from Kafka
    changelogs on the next start.
    """
    import faust
    import prometheus_client
    import pydantic

    from llmpulse.processors.app import Worker
    from llmpulse.processors.settings import ProcessorSettings
    from llmpulse.processors.startup import one_native_thread, settle_heap, wait_for_kafka
    from llmpulse.processors.topics import TopicLayoutError, ensure_topics

    overrides = {
        name: value
        for name, value in (("web_port", web_port), ("web_host", web_host), ("data_dir", data_dir))
        if value is not None
    }
    try:
        settings = ProcessorSettings(**overrides)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"llmpulse worker: invalid settings: {problems}", err=True)
        raise typer.Exit(2) from None
    if print_settings:
        typer.echo(settings.as_yaml(), nl=False)
        raise typer.Exit(0)
    # LLMPULSE_LOG_FORMAT=json: one JSON object a line (llmpulse/logs.py)
    logging.config.dictConfig(logging_config(loglevel, settings.log_format))
    # Without a broker, say why once in a while and answer /health/ready with 503 until it is there.
    wait_for_kafka(settings.bootstrap_servers, settings.kafka, settings.web_host, settings.web_port)
    try:
        ensure_topics(settings.bootstrap_servers, settings.kafka, settings.topics, settings.topic_partitions,
                      otlp=settings.otlp.enabled, app_id=settings.app_id)
    except TopicLayoutError as exc:
        typer.echo(f"llmpulse worker: {exc}", err=True)
        raise typer.Exit(2) from None
    # No <counter>_created series: one more line per counter child (~20k of a 10k-series worker's ~113k), which no
    # rule or dashboard reads and every scrape formatted on the event loop (docs/metrics.md).
    prometheus_client.disable_created_metrics()
    built = Worker(settings)
    typer.echo(
        f"llmpulse worker: kafka {settings.bootstrap_servers} ({settings.kafka.describe()}), "
        f"topic {settings.topics.calls}, http://{settings.web_host}:{settings.web_port}/metrics"
    )
    # faust replaces the root handlers with its own (colored text) unless given a logging config; a fresh one,
    # since dictConfig consumes parts of the dict it is given.
    json_logs = {"logging_config": logging_config(loglevel, "json")} if settings.log_format == "json" else {}
    runner = faust.Worker(built.app, loglevel=loglevel, quiet=True, **json_logs)
    # No terminal spinner: at a level of warning or above, faust's spinner sets the root logger to DEBUG so that
    # it can spin on every record, and every aiokafka and faust debug line is then built (~5% of the CPU).
    runner.spinner = None
    settle_heap()
    one_native_thread()
    runner.execute_from_commandline()
