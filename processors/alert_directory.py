"""Every worker's view of all alerts and incidents, read from the alerts topic itself.

A worker only computes the alerts of its own partitions, but ``GET /api/alerts`` and ``GET /api/incidents``
must answer the same on every worker. Each worker therefore tails the whole alerts topic (no consumer group,
every partition from the beginning) in a background thread and keeps the newest event per alert id and per
incident id, plus the partition it came from so an acknowledgement can be routed to the worker that owns it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from llmpulse.config import KafkaSecurity
from llmpulse.connection import client_config
from llmpulse.schemas.alerts_topic import INCIDENT_KIND, AlertsTopicCodec
from llmpulse.schemas.single_object import DecodeError

log = logging.getLogger(__name__)
_SEVERITY_RANK = {"CRITICAL": 0, "ERROR": 1, "WARNING": 2, "INFO": 3}


@dataclass(frozen=True, slots=True)
class KnownAlert:
    """The newest record of an alert or an incident (``kind``) and the alerts-topic partition it came from."""

    record: dict[str, Any]
    partition: int
    kind: str = "alert"


class AlertDirectory:
    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity, max_alerts: int = 10_000) -> None:
        self.topic = topic
        self.codec = AlertsTopicCodec()
        self.max_alerts = max_alerts
        self._alerts: dict[str, KnownAlert] = {}
        self._incidents: dict[str, KnownAlert] = {}
        self._incident_of: dict[str, str] = {}  # member alert_id -> incident_id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._config = {
                **client_config(bootstrap, security, "llmpulse.alert_directory.librdkafka"),
                "group.id": "llmpulse-alert-directory",  # never committed: assign() reads everything
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "topic.metadata.refresh.interval.ms": 5000,
        }
        self._consumer: Consumer | None = None
        self._thread = threading.Thread(target=self._run, name="llmpulse-alert-directory", daemon=True)

    def start(self) -> None:
        self._consumer = Consumer(self._config)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _assign_all(self) -> int:
        assert self._consumer is not None
        metadata = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        partitions = list(metadata.partitions) if metadata and not metadata.error else []
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        return len(partitions)

    def _run(self) -> None:
        assert self._consumer is not None
        assigned = 0
        while not self._stop.is_set():
            try:
                if not assigned:
                    assigned = self._assign_all()
                    if not assigned:
                        self._stop.wait(1.0)
                        continue
                for message in self._consumer.consume(num_messages=500, timeout=0.5):
                    if message.error():
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("alert directory: %s", message.error())
                        continue
                    self._apply(message.value(), message.partition())
            except Exception:
                log.exception("alert directory: consumer error (retrying)")
                self._stop.wait(1.0)
        self._consumer.close()

    def _apply(self, value: bytes | None, partition: int) -> None:
        if not value:
            return
        try:
            kind, record = self.codec.decode(value)
        except DecodeError as exc:
            log.warning("alert directory: unreadable record on the alerts topic: %s", exc)
            return
        with self._lock:
            if kind == INCIDENT_KIND:
                incident_id = record["incident_id"]
                _put(self._incidents, incident_id, KnownAlert(record, partition, kind), self.max_alerts)
                for member in record["members"]:
                    self._incident_of[member["alert_id"]] = incident_id
                while len(self._incident_of) > 10 * self.max_alerts:
                    self._incident_of.pop(next(iter(self._incident_of)))
            else:
                _put(self._alerts, record["alert_id"], KnownAlert(record, partition, kind), self.max_alerts)

    def get(self, alert_id: str) -> KnownAlert | None:
        """An alert or an incident by its id."""
        with self._lock:
            return self._alerts.get(alert_id) or self._incidents.get(alert_id)

    def incidents(self, status: str | None = None) -> list[dict[str, Any]]:
        """Incidents, open ones first, then most severe, then newest; ``status`` as in the incident record
        (opened/escalated/updated/acknowledged/resolved), or "open" for any not resolved. "acknowledged" means
        acknowledged now: the newest event of an acknowledged incident may be an ``updated`` (its members'
        acknowledgements, a new member), which keeps ``acknowledged_by``."""
        with self._lock:
            records = [known.record for known in self._incidents.values()]
        chosen = [r for r in records if status is None or r["status"] == status
                  or (status == "open" and r["status"] != "resolved")
                  or (status == "acknowledged" and r["status"] != "resolved" and r.get("acknowledged_by"))]
        chosen.sort(key=lambda r: (r["status"] == "resolved", _SEVERITY_RANK.get(r["severity"], 9),
                                   -r["updated_at_ms"]))
        return chosen

    def query(self, status: str | None = None, severity: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            records = [known.record for known in self._alerts.values()]
        chosen = [
            r for r in records
            if (status is None or r["status"] == status) and (severity is None or r["severity"] == severity)
        ]
        chosen.sort(key=lambda r: (_SEVERITY_RANK.get(r["severity"], 9), -r["updated_at_ms"]))
        with self._lock:
            return [{**r, "incident_id": self._incident_of.get(r["alert_id"])} for r in chosen]


def _put(known: dict[str, KnownAlert], key: str, value: KnownAlert, limit: int) -> None:
    """Newest last; the oldest go first past ``limit`` (dicts keep insertion order)."""
    known.pop(key, None)
    known[key] = value
    while len(known) > limit:
        known.pop(next(iter(known)))
