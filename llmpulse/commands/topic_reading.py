"""Reading a topic up to where it ended when the command began, for the one-shot commands (export, dead-letter)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any


def records_until_ends(consumer: Any, topic: str, ends: Mapping[int, int], idle_timeout_s: float) -> Iterator[Any]:
    """Every record the assigned ``consumer`` reads of ``topic`` below ``ends`` (partition -> end offset), until each
    partition's position reaches its end, or nothing arrives for ``idle_timeout_s`` (a broker that stops answering
    ends the command instead of hanging it). A live topic does not keep it running."""
    from confluent_kafka import TopicPartition

    pending = set(ends)
    idle_since = time.monotonic()
    while pending and time.monotonic() - idle_since < idle_timeout_s:
        messages = consumer.consume(num_messages=500, timeout=0.5)
        for message in messages:
            if message.error() is None and message.offset() < ends[message.partition()]:
                yield message
        if messages:
            idle_since = time.monotonic()
        # Positions pass transaction markers too, so "caught up" never waits for a record that is not there.
        for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
            if tp.offset >= ends[tp.partition]:
                pending.discard(tp.partition)
