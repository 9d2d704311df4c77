"""``llmpulse dead-letter show|replay``: what the worker refused, and sending it back once it can be read.

A worker refuses a record it cannot read to the dead-letter topic with the bytes and a reason code
(schemas/dead_letter.v1.avsc). After an upgrade that makes such records readable (a worker that knows a newer
SDK's schema, for ``unknown_schema``), ``replay`` writes each refused payload back to the topic and partition it
came from. Replays are exactly once: the payloads and the replay's position on the dead-letter topic (a consumer
group per reason code, ``llmpulse-dead-letter-replay-<code>``) are committed in one Kafka transaction, so running
the command again, or after a crash, never sends a record twice. Truncated payloads cannot be replayed; they are
counted and left.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from llmpulse.config import KafkaSecurity, Topics

REPLAY_GROUP_PREFIX = "llmpulse-dead-letter-replay-"
IDLE_TIMEOUT_S = 10.0  # a broker that stops answering ends the command instead of hanging it


@dataclass
class Tally:
    """What one pass over the dead-letter topic found (per reason code) and did."""

    found: Counter[str] = field(default_factory=Counter)
    replayed: Counter[str] = field(default_factory=Counter)  # (source topic) -> records sent back
    truncated: int = 0

    def lines(self) -> list[str]:
        return [f"{code}: {count}" for code, count in sorted(self.found.items())]


def _consumer(bootstrap: str, security: KafkaSecurity, group: str) -> Any:
    from confluent_kafka import Consumer

    from llmpulse.connection import client_config

    return Consumer({**client_config(bootstrap, security, "llmpulse.cli.librdkafka"), "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed"})


def _drain(consumer: Any, topic: str, bootstrap: str, reached: dict[int, int] | None = None) -> Any:
    """Yield every record of ``topic`` from the group's position up to the end the topic had at the start;
    ``reached`` gets, per partition, the offset after the last record yielded (where a later run starts)."""
    from confluent_kafka import TopicPartition

    from llmpulse.commands.topic_reading import records_until_ends

    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        typer.echo(f"llmpulse: topic {topic} does not exist on {bootstrap} (nothing was refused yet?)", err=True)
        raise typer.Exit(1)
    marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in metadata.partitions}
    committed = consumer.committed([TopicPartition(topic, p) for p in sorted(marks)], timeout=10)
    # from the group's committed offset, else the earliest; a partition with nothing past it is not read at all
    # (its position would stay unknown until the idle time-out ends the command)
    starts = [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else marks[tp.partition][0])
              for tp in committed]
    wanted = [tp for tp in starts if tp.offset < marks[tp.partition][1]]
    consumer.assign(wanted)
    ends = {tp.partition: marks[tp.partition][1] for tp in wanted}
    for message in records_until_ends(consumer, topic, ends, IDLE_TIMEOUT_S):
        yield message
        if reached is not None:
            reached[message.partition()] = message.offset() + 1


def show() -> None:
    """Count the refused records on the dead-letter topic by reason code (reads everything, changes nothing)."""
    from llmpulse import schemas
    from llmpulse.commands.connect import kafka_or_exit
    from llmpulse.schemas.single_object import SchemaCodec

    bootstrap, security = kafka_or_exit()
    topic = Topics.from_env().dead_letter
    codec = SchemaCodec(schemas.DEAD_LETTER)
    tally = Tally()
    consumer = _consumer(bootstrap, security, f"llmpulse-dead-letter-show-{uuid.uuid4().hex[:8]}")
    try:
        for message in _drain(consumer, topic, bootstrap):
            tally.found[codec.decode(message.value())["reason_code"]] += 1
    finally:
        consumer.close()
    typer.echo("\n".join(tally.lines()) or f"no refused records on {topic}")


def replay(
    reason: Annotated[str, typer.Option(help="Replay the records refused with this reason code.")] = "unknown_schema",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be replayed; send nothing.")] = False,
) -> None:
    """Send refused records back to where they came from, exactly once (after the worker can read them)."""
    from confluent_kafka import KafkaException, Producer, TopicPartition

    from llmpulse import schemas
    from llmpulse.commands.connect import kafka_or_exit
    from llmpulse.connection import client_config
    from llmpulse.schemas.single_object import SchemaCodec

    bootstrap, security = kafka_or_exit()
    topic = Topics.from_env().dead_letter
    codec = SchemaCodec(schemas.DEAD_LETTER)
    consumer = _consumer(bootstrap, security, REPLAY_GROUP_PREFIX + reason)
    producer = None
    if not dry_run:
        producer = Producer({**client_config(bootstrap, security, "llmpulse.cli.librdkafka"),
                             "transactional.id": f"{REPLAY_GROUP_PREFIX}{reason}", "linger.ms": 20})
        producer.init_transactions(30)
        producer.begin_transaction()
    tally = Tally()
    reached: dict[int, int] = {}
    try:
        for message in _drain(consumer, topic, bootstrap, reached):
            record = codec.decode(message.value())
            if record["reason_code"] != reason:
                continue
            tally.found[reason] += 1
            if record["payload_truncated"]:
                tally.truncated += 1
                continue
            if producer is not None:
                producer.produce(record["source_topic"], record["payload"], partition=record["source_partition"])
                producer.poll(0)
            tally.replayed[record["source_topic"]] += 1
        if producer is not None:
            producer.send_offsets_to_transaction([TopicPartition(topic, p, offset) for p, offset in reached.items()],
                                                 consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(60)
    except KafkaException as exc:
        if producer is not None:
            producer.abort_transaction(30)
        typer.echo(f"llmpulse: replay from {topic} failed and was rolled back (nothing sent): {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        consumer.close()
    sent = ", ".join(f"{count} to {target}" for target, count in sorted(tally.replayed.items())) or "none"
    verb = "would replay" if dry_run else "replayed"
    skipped = f"; {tally.truncated} truncated, left on {topic}" if tally.truncated else ""
    typer.echo(f"{verb} {sum(tally.replayed.values())} of {tally.found[reason]} record(s) refused as {reason} "
               f"({sent}){skipped}")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="The dead-letter topic: what the worker refused, and replaying it.", no_args_is_help=True)
    sub.command()(show)
    sub.command()(replay)
    app.add_typer(sub, name="dead-letter")
