"""The faust app and the topics and tables it declares: the one place that knows their names and layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from llmpulse.processors.settings import ProcessorSettings

STATE_TABLE = "llmpulse-state"
FLEET_TABLE = "llmpulse-fleet"
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
    fleet: faust.TopicT
    state: TableT  # per calls partition, keys ``<partition>|<namespace>/<key>``
    fleet_state: TableT  # the fleet stage's blob


def wire(settings: ProcessorSettings) -> Wiring:
    s = settings
    partitions = s.topic_partitions
    app = faust.App(
        s.app_id,
        broker=f"kafka://{s.bootstrap_servers.replace(',', ';kafka://')}",
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
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        stream_buffer_maxsize=64,
        autodiscover=False,
    )
    topics = s.topics
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    return Wiring(
        app=app,
        calls=app.topic(topics.calls, partitions=partitions, **raw),
        alerts=app.topic(topics.alerts, partitions=partitions, **raw),
        dead_letter=app.topic(topics.dead_letter, partitions=partitions, **raw),
        commands=app.topic(topics.alert_commands, partitions=partitions, **raw),
        provider_state=app.topic(topics.provider_state, partitions=partitions, **raw),
        fleet=app.topic(topics.fleet, partitions=1, **raw),
        state=app.Table(STATE_TABLE, default=None, key_type=bytes, value_type=bytes, partitions=partitions),
        fleet_state=app.Table(FLEET_TABLE, default=None, key_type=bytes, value_type=bytes, partitions=1),
    )
