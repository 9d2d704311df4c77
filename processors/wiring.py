"""The faust app and the topics and tables it declares: the one place that knows their names and layout."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT
from faust.types.auth import CredentialsT

from llmpulse.config import KafkaSecurity
from llmpulse.connection import client_config
from llmpulse.processors.prompt_fetch import use_prompt_fetches
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.state_recovery import BulkReadTable, ChangelogReader
from llmpulse.processors.topics import COMPACTION, FLEET_TABLE, MAX_RECORD_BYTES, STATE_TABLE

FLEET_PARTITION = 0  # the fleet topic (and table) has one partition: one owner, one order
FLEET_ALERTS_PARTITION = 0  # the alerts-topic partition for the fleet stage's alerts and every incident


@dataclass(frozen=True, slots=True)
class Wiring:
    app: faust.App
    calls: faust.TopicT
    alerts: faust.TopicT
    dead_letter: faust.TopicT
    commands: faust.TopicT
    provider_state: faust.TopicT
    budget_state: faust.TopicT
    fleet: faust.TopicT
    state: TableT  # per calls partition, keys ``<partition>|<namespace>/<key>``
    fleet_state: TableT  # the fleet stage's blob
    changelog_reader: ChangelogReader  # reads both tables' changelogs in bulk on assignment (its ``left``)
    model_routes: faust.TopicT | None = None  # route-back decisions (quality rollback), when that is turned on
    otlp: faust.TopicT | None = None  # OTLP spans from the Collector, when that ingest is on (co-partitioned)


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """The security settings the confluent-kafka clients get (``KafkaSecurity.librdkafka_config``), for faust's
    aiokafka clients: a TLS context (CA, client certificate) and SASL credentials; None for PLAINTEXT."""
    context = None
    if security.uses_tls:
        context = ssl.create_default_context(cafile=security.ssl_ca_location)
        if security.ssl_certificate_location:
            key_password = security.ssl_key_password.get_secret_value() if security.ssl_key_password else None
            context.load_cert_chain(security.ssl_certificate_location, security.ssl_key_location, key_password)
    if security.uses_sasl:
        assert security.sasl_password is not None  # KafkaSecurity checks it on creation
        return faust.SASLCredentials(username=security.sasl_username,
                                     password=security.sasl_password.get_secret_value(),
                                     mechanism=security.sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


def wire(settings: ProcessorSettings) -> Wiring:
    s = settings
    partitions = s.topic_partitions
    app = faust.App(
        s.app_id,
        broker=f"kafka://{s.bootstrap_servers.replace(',', ';kafka://')}",
        broker_credentials=broker_credentials(s.kafka),
        processing_guarantee="at_least_once",
        store="memory://",
        datadir=str(s.data_dir),
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host=s.web_host,
        web_port=s.web_port,
        web_in_thread=False,
        producer_max_request_size=MAX_RECORD_BYTES,
        consumer_max_fetch_size=MAX_RECORD_BYTES,
        stream_buffer_maxsize=64,
        table_standby_replicas=s.standby_replicas,
        autodiscover=False,
    )
    use_prompt_fetches(app)
    # the state tables' changelogs are read in bulk when their partitions are assigned (state_recovery.py)
    reader = ChangelogReader(client_config(s.bootstrap_servers, s.kafka, "llmpulse.worker.recovery"))
    topics = s.topics
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    # on the topics faust creates: state blobs up to MAX_RECORD_BYTES, compaction a restart reads little of (topics.py)
    changelog = {"max.message.bytes": str(MAX_RECORD_BYTES), **COMPACTION}
    return Wiring(
        app=app,
        calls=app.topic(topics.calls, partitions=partitions, **raw),
        alerts=app.topic(topics.alerts, partitions=partitions, **raw),
        dead_letter=app.topic(topics.dead_letter, partitions=partitions, **raw),
        commands=app.topic(topics.alert_commands, partitions=partitions, **raw),
        provider_state=app.topic(topics.provider_state, partitions=partitions, **raw),
        budget_state=app.topic(topics.budget_state, partitions=partitions, **raw),
        fleet=app.topic(topics.fleet, partitions=1, **raw),
        state=_table(app, reader, STATE_TABLE, partitions, changelog),
        fleet_state=_table(app, reader, FLEET_TABLE, 1, changelog),
        changelog_reader=reader,
        otlp=app.topic(topics.otlp, partitions=partitions, **raw) if s.otlp.enabled else None,
        model_routes=(app.topic(topics.model_routes, partitions=partitions, **raw)
                      if s.quality.rollback_enabled else None),
    )


def _table(app: faust.App, reader: ChangelogReader, name: str, partitions: int,
           changelog: dict[str, str]) -> TableT:
    """A table of raw bytes as ``app.Table`` declares one, on a store recovered in bulk."""
    table = BulkReadTable(app, reader=reader, name=name, default=None, beacon=app.tables.beacon,
                          partitions=partitions, key_type=bytes, value_type=bytes, extra_topic_configs=changelog)
    return app.tables.add(table)
