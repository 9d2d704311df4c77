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
from typing import Any

from llmpulse.config import KafkaSecurity, Topics
from llmpulse.producers.topic_follower import FollowerTiming, TopicFollower
from llmpulse.schemas.single_object import SchemaCodec

log = logging.getLogger("llmpulse.routes")
MODEL_ROUTE = "model_route"  # the contract's name


def version_of(model: str, prompt_version: str | None) -> str:
    return f"{model}@{prompt_version}" if prompt_version else model


class ModelRoutes:
    def __init__(self, service: str, bootstrap: str | None, topic: str | None = None,
                 security: KafkaSecurity | None = None, timing: FollowerTiming | None = None) -> None:
        self.service = service
        self._codec = SchemaCodec(MODEL_ROUTE)
        self._decision: dict[str, Any] | None = None
        self._follower = TopicFollower("routes", bootstrap, topic or Topics.from_env().model_routes,
                                       self._take, security=security, timing=timing)

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

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic has been read up to its end once (for start-up and tests); False on timeout."""
        return self._follower.wait_ready(timeout)

    def close(self) -> None:
        self._follower.close()

    def _take(self, key: bytes | None, record: bytes | None) -> None:
        if key is None or key.decode(errors="replace") != self.service or not record:
            return
        self._decision = self._codec.decode(record)  # an unreadable one is logged and skipped by the follower
