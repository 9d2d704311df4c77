"""Follow route-back decisions: which model/prompt version a service should use after a quality rollback.

    routes = ModelRoutes("support-bot", bootstrap="kafka:9092")
    model, prompt_version = routes.choose("gpt-4o-mini", "v2")   # ("gpt-4o-mini", "v1") after a rollback

The worker publishes a decision (schemas/model_route.v1.avsc) on the compacted ``llm-model-routes`` topic,
keyed by service, only when LLMPULSE_QUALITY__ROLLBACK_ENABLED is on, and at most once per service per
cooldown (processors/core/quality.py). A background thread reads the topic from the beginning (partitions
assigned, no consumer group) and keeps the newest decision per service. ``choose`` is an in-memory read that
never waits for Kafka and never raises: it returns the decision's version when the caller is on the version
the decision moved away from, and what it was given otherwise (no decision, another version, broker down).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from llmpulse.config import KafkaSecurity, Topics
from llmpulse.connection import client_config
from llmpulse.schemas.single_object import SchemaCodec

log = logging.getLogger("llmpulse.routes")
MODEL_ROUTE = "model_route"  # the contract's name


def version_of(model: str, prompt_version: str | None) -> str:
    return f"{model}@{prompt_version}" if prompt_version else model


class ModelRoutes:
    def __init__(self, service: str, bootstrap: str, topic: str | None = None,
                 security: KafkaSecurity | None = None) -> None:
        self.service = service
        self.topic = topic or Topics.from_env().model_routes
        self._codec = SchemaCodec(MODEL_ROUTE)
        self._decision: dict[str, Any] | None = None
        self._stop = threading.Event()
        config = {**client_config(bootstrap, security or KafkaSecurity(), "llmpulse.routes.librdkafka"),
                  "group.id": f"llmpulse-routes-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        self._thread = threading.Thread(target=self._follow, args=(config,), name="llmpulse-routes", daemon=True)
        self._thread.start()

    @property
    def decision(self) -> dict[str, Any] | None:
        """The newest route-back decision for this service, if any."""
        return self._decision

    def choose(self, model: str, prompt_version: str | None = None) -> tuple[str, str | None]:
        try:
            decision = self._decision
            if decision is not None and decision["from_version"] == version_of(model, prompt_version):
                return decision["to_model"], decision["to_prompt_version"]
        except Exception:  # never break the caller's request
            log.debug("llmpulse: route lookup failed", exc_info=True)
        return model, prompt_version

    def apply(self, record: bytes | None, key: bytes | None) -> None:
        """Take one record of the topic (the follower thread calls it; tests may too)."""
        if key is None or key.decode(errors="replace") != self.service or not record:
            return
        try:
            self._decision = self._codec.decode(record)
        except Exception as exc:
            log.warning("llmpulse: unreadable route decision: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _follow(self, config: dict[str, Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(config)
        try:
            while not self._stop.is_set():
                try:
                    metadata = consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
                    if metadata is None or metadata.error is not None or not metadata.partitions:
                        self._stop.wait(5.0)
                        continue
                    consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
                    while not self._stop.is_set():
                        message = consumer.poll(0.5)
                        if message is not None and not message.error():
                            self.apply(message.value(), message.key())
                except Exception as exc:  # broker down: keep the last decision, retry later
                    log.debug("llmpulse: route follower retrying: %s", exc)
                    self._stop.wait(5.0)
        finally:
            consumer.close()
