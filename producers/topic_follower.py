"""Follow a compacted topic in a background thread: every record, from the beginning, handed to a callback.

What ``ProviderRouter`` (provider state), ``BudgetStateFollower`` (budget state) and ``ModelRoutes`` (route-back
decisions) share. The thread assigns every partition from the beginning (no consumer group is joined, nothing
is committed), remembers where each partition ended at start-up to tell when it has caught up (``ready``), and
checks reachability with a cheap round trip every ``heartbeat`` seconds, since ``poll()`` alone cannot tell an
idle topic from a dead broker. On any failure it marks the topic unreachable and retries after ``retry``
seconds; the owner's view stays as it was and newer records overwrite it when the topic answers again. The
callback runs on the follower thread and must not raise (exceptions are logged and the record skipped).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmpulse.config import KafkaSecurity
from llmpulse.connection import client_config

OnRecord = Callable[[bytes | None, bytes | None], None]  # (key, value); a None value is a tombstone


@dataclass(frozen=True, slots=True)
class FollowerTiming:
    """How the follower thread paces itself against the broker (seconds)."""

    poll: float = 0.2
    heartbeat: float = 2.0  # how often reachability is re-checked
    request_timeout: float = 2.0
    retry: float = 1.0  # back-off after a failed connect


class TopicFollower:
    """A daemon thread feeding ``on_record`` from ``topic``; ``bootstrap=None`` follows nothing."""

    def __init__(self, name: str, bootstrap: str | None, topic: str, on_record: OnRecord, *,
                 security: KafkaSecurity | None = None, timing: FollowerTiming | None = None,
                 consumer_config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.topic = topic
        self._log = logging.getLogger(f"llmpulse.{name}")  # the owner's logger: llmpulse.router, ...
        self.timing = timing or FollowerTiming()
        self._on_record = on_record
        self._catch_up: dict[int, int] = {}  # partition -> end offset still to reach at start-up
        self._reachable = False
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if bootstrap:
            config = {
                **client_config(bootstrap, security, f"llmpulse.{name}.librdkafka"),
                "group.id": f"llmpulse-{name}-{uuid.uuid4().hex[:8]}",  # required by the client, never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                **(consumer_config or {}),
            }
            self._thread = threading.Thread(target=self._follow, args=(config,), name=f"llmpulse-{name}",
                                            daemon=True)
            self._thread.start()

    @property
    def reachable(self) -> bool:
        """Whether the topic answered within the last heartbeat."""
        return self._reachable

    @property
    def ready(self) -> bool:
        """Whether the topic has been read up to where it ended at start-up."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic has been read up to its end once (for start-up and tests); False on timeout."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # ---- the thread ----------------------------------------------------------------------------------------
    def _follow(self, config: dict[str, Any]) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(config)
        try:
            while not self._stop.is_set():
                try:
                    partitions = self._assign(consumer)
                    self._read(consumer, partitions)
                except Exception as exc:  # broker down, topic missing: the owner falls back, retry later
                    self._reachable = False
                    self._log.debug("llmpulse %s: topic %s unavailable: %s", self.name, self.topic, exc)
                    self._stop.wait(self.timing.retry)
        finally:
            consumer.close()

    def _assign(self, consumer: Any) -> list[Any]:
        """Assign every partition from the beginning; remember where the end was, to know when caught up."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        metadata = consumer.list_topics(self.topic, timeout=self.timing.request_timeout).topics.get(self.topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise KafkaException(metadata.error if metadata is not None else "no metadata")
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
        self._catch_up = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=self.timing.request_timeout, cached=False)
            if high > low:
                self._catch_up[tp.partition] = high
        consumer.assign(partitions)
        self._reachable = True
        if not self._catch_up:
            self._ready.set()
        return partitions

    def _read(self, consumer: Any, partitions: list[Any]) -> None:
        next_heartbeat = time.monotonic() + self.timing.heartbeat
        while not self._stop.is_set():
            message = consumer.poll(self.timing.poll)
            if message is not None and message.error() is None:
                self._apply(message.partition(), message.offset(), message.key(), message.value())
            if time.monotonic() >= next_heartbeat:
                consumer.get_watermark_offsets(partitions[0], timeout=self.timing.request_timeout, cached=False)
                self._reachable = True
                next_heartbeat = time.monotonic() + self.timing.heartbeat

    def _apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        try:
            self._on_record(key, value)
        except Exception:
            self._log.warning("llmpulse %s: skipping a record of %s it could not apply", self.name, self.topic,
                              exc_info=True)
        high = self._catch_up.get(partition)
        if high is not None and offset + 1 >= high:
            del self._catch_up[partition]
            if not self._catch_up:
                self._ready.set()
