"""``llmpulse alerts forward``: deliver the alerts topic (incidents and member alerts) to Alertmanager or a
webhook, resuming after restarts."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmpulse.commands.alerts import alerts_app, help_text
from llmpulse.config import KafkaSecurity, Topics

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition

    from llmpulse.processors.forwarding import AlertForwarder
    from llmpulse.schemas.alerts_topic import AlertsTopicCodec

log = logging.getLogger("llmpulse.forward")
GROUP = "llmpulse-alerts-forward"


def register(_app: typer.Typer) -> None:
    alerts_app.command("forward", help=help_text(forward.__doc__ or ""))(forward)


def forward(
    alertmanager: Annotated[
        str | None, typer.Option(help="Alertmanager base URL, e.g. http://alertmanager:9093 (API v2).")
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="Any URL that accepts one JSON record (alert or incident) per POST.")
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option(help="With no committed position yet, start at the oldest alert kept, not the newest.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0.0,
    max_events: Annotated[
        int, typer.Option("--max", help="Stop after delivering this many events, alerts and incidents (0: never).")
    ] = 0,
    group: Annotated[
        str, typer.Option(help="Kafka consumer group; its committed offsets are the resume point.")
    ] = GROUP,
    resend_interval: Annotated[
        float, typer.Option(help="Re-post still-active incidents and alerts to Alertmanager every N s (0: never).")
    ] = 60.0,
    attempts: Annotated[int, typer.Option(help="HTTP attempts per request before backing off the batch.")] = 6,
) -> None:
    """Forward every event of the alerts topic, incidents and member alerts, to Alertmanager or a webhook, at
    least once, in order per incident.

    Incidents (what pages) become Alertmanager alerts labelled alertname="llmpulse_incident",
    llmpulse_kind="incident", incident_id, family, severity (lower case) and priority; their summary,
    mitigation, scope, scope_key, member count, rules and member ids are annotations. Member alerts (detail)
    are labelled llmpulse_kind="alert", alertname (the rule), severity, priority, fingerprint,
    service/model/provider when set, and the alert's own labels; annotations: summary, mitigation, observed,
    threshold, window, alert_id, and incident_id once an incident listing the alert was read. Every event
    but resolved is posted active (startsAt = started_at); resolved is posted with endsAt, which resolves
    it. When an escalation changes severity and priority, the old label set is ended in the same request; a
    resolved incident that reopens without paging (a flapping cause) stays resolved in Alertmanager. A
    --webhook receives each record as JSON with a "kind" key ("alert" or "incident") instead. Alertmanager
    resolves an alert it has not heard of for its resolve_timeout, so what is still active is re-posted
    every --resend-interval.

    Offsets are committed to the consumer group only after the receiver accepted the events, so a restart
    resumes where delivery stopped; events already delivered (the same alert_id, status and updated_at; for
    an incident, the same record) are not sent twice. Connection errors, 429 and 5xx are retried with
    exponential backoff and never dropped: the batch stays uncommitted and is tried again. A 4xx answer is
    logged with the receiver's reason and counted as rejected. A summary of the counts is printed on exit;
    the exit code is 1 when events were left undelivered.
    """
    from llmpulse.processors import forwarding

    if (alertmanager is None) == (webhook is None):
        raise typer.BadParameter("give exactly one of --alertmanager or --webhook", param_hint="--alertmanager")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = forwarding.ForwardStats()
    poster = forwarding.HttpPoster(forwarding.RetryPolicy(max_attempts=max(1, attempts)), stats=stats)
    if alertmanager:
        target: Any = forwarding.AlertmanagerTarget(alertmanager, poster)
        forwarder = forwarding.AlertForwarder(target, stats, resend_s=resend_interval)
    else:
        forwarder = forwarding.AlertForwarder(forwarding.WebhookTarget(str(webhook), poster), stats)
    from llmpulse.commands.connect import kafka_or_exit

    bootstrap, security = kafka_or_exit()
    topic = Topics.from_env().alerts
    log.info("forwarding %s on %s to %s (group %s)", topic, bootstrap, alertmanager or webhook, group)
    undelivered = _run(forwarder, bootstrap, security, topic, group, from_beginning, timeout, max_events)
    sys.stderr.write(json.dumps({"forward": stats.as_dict(), "undelivered": undelivered}) + "\n")
    if undelivered:
        raise typer.Exit(1)


class _ResumePoints:
    """On assignment, read each partition from the start but deliver only past the resume point.

    Records before the committed offset were delivered by an earlier run; reading them again (the topic is
    compacted by fingerprint and incident id, so this is short) rebuilds the dedup memory, the set of active
    alerts that must keep being re-sent and the label sets Alertmanager holds. With no committed offset the
    resume point is the end of the partition, or its start with --from-beginning.
    """

    def __init__(self, from_beginning: bool) -> None:
        self.from_beginning = from_beginning
        self.until: dict[int, int] = {}

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        for tp in consumer.committed(partitions, timeout=10):
            if tp.offset >= 0:
                self.until[tp.partition] = tp.offset
            elif self.from_beginning:
                self.until[tp.partition] = 0
            else:
                self.until[tp.partition] = consumer.get_watermark_offsets(tp, timeout=10)[1]
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING
        consumer.assign(partitions)

    def delivered_before(self, message: Message) -> bool:
        return message.offset() < self.until.get(message.partition(), 0)


def _run(forwarder: AlertForwarder, bootstrap: str, security: KafkaSecurity, topic: str, group: str,
         from_beginning: bool, timeout: float, max_events: int) -> int:
    """Consume until the deadline or ``max_events``; returns the number of events left undelivered."""
    from confluent_kafka import Consumer

    from llmpulse.connection import client_config
    from llmpulse.schemas.alerts_topic import AlertsTopicCodec

    codec = AlertsTopicCodec()
    consumer = Consumer({
        **client_config(bootstrap, security, "llmpulse.forward.librdkafka"), "group.id": group,
        "enable.auto.commit": False,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest" if from_beginning else "latest",
        "topic.metadata.refresh.interval.ms": 5000,
    })
    resume = _ResumePoints(from_beginning)
    consumer.subscribe([topic], on_assign=resume.on_assign)
    deadline = time.monotonic() + timeout if timeout else None
    stats = forwarder.stats
    pending = 0
    try:
        while (deadline is None or time.monotonic() < deadline) and not (
            max_events and stats.forwarded + stats.rejected >= max_events
        ):
            messages = [m for m in consumer.consume(num_messages=500, timeout=0.5) if _usable(m)]
            pending = _deliver(consumer, codec, forwarder, resume, messages) if messages else 0
            if pending:
                time.sleep(1.0)  # the poster already backed off; pause before offering the batch again
            forwarder.resend_if_due()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return pending


def _usable(message: Message) -> bool:
    from confluent_kafka import KafkaError

    error = message.error()
    if error is not None and error.code() != KafkaError._PARTITION_EOF:
        log.warning("forward: %s", error)
    return error is None


def _deliver(consumer: Consumer, codec: AlertsTopicCodec, forwarder: AlertForwarder, resume: _ResumePoints,
             messages: list[Message]) -> int:
    """Deliver one consumed batch and commit it; on failure rewind to it and return how many are pending."""
    from confluent_kafka import TopicPartition

    from llmpulse.processors.forwarding import DeliveryError
    from llmpulse.schemas.single_object import DecodeError

    fresh: list[dict[str, Any]] = []
    for message in messages:
        try:
            kind, decoded = codec.decode(message.value())
        except DecodeError as exc:
            log.error("forward: skipping unreadable record at %s[%d]@%d: %s", message.topic(),
                      message.partition(), message.offset(), exc)
            continue
        record = {"kind": kind, **decoded}
        if resume.delivered_before(message):
            forwarder.replay(record)
        else:
            fresh.append(record)
    try:
        forwarder.forward(fresh)
    except DeliveryError as exc:
        log.error("forward: %d events not delivered yet (%s); will retry", len(fresh), exc)
        first: dict[tuple[str, int], int] = {}
        for message in messages:
            key = (message.topic(), message.partition())
            first[key] = min(first.get(key, message.offset()), message.offset())
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        return len(fresh)
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        last[key] = max(last.get(key, -1), message.offset())
    consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False)
    return 0

