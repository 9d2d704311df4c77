"""Compacted topics that exist already (made by an older worker, or by hand) get the compaction a restart reads
little of (processors/topics.py), against the real broker; what an operator set on a topic stays."""

from __future__ import annotations

import dataclasses
import logging
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from llmpulse.config import KafkaSecurity, Topics
from llmpulse.processors.topics import COMPACTION, changelog_topics, ensure_compaction, ensure_topics
from tests.support.waiting import wait_until


def _configs(admin: AdminClient, name: str) -> dict[str, tuple[str, int]]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(30)
    return {key: (entries[key].value, entries[key].source) for key in COMPACTION}


def test_existing_compacted_topics_get_compaction_settings_but_keep_an_operators(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    tag = uuid.uuid4().hex[:10]
    topics = Topics(**{field.name: f"cmp-{tag}-{field.name}" for field in dataclasses.fields(Topics)})
    app_id = f"cmp-{tag}-app"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    older = {"cleanup.policy": "compact"}  # what an older worker (and faust) created them with
    made = [NewTopic(topics.budget_state, 3, 1, config=older),
            NewTopic(topics.provider_state, 3, 1, config={**older, "segment.ms": "60000"}),  # an operator's choice
            *(NewTopic(name, 3, 1, config=older) for name in changelog_topics(app_id))]
    for future in admin.create_topics(made).values():
        future.result(30)
    try:
        caplog.set_level(logging.INFO, logger="llmpulse.processors.topics")
        created = ensure_topics(kafka_bootstrap, KafkaSecurity(), topics, 3, app_id=app_id)
        assert topics.budget_state not in created and topics.model_routes in created

        wanted = {key: (value, ConfigSource.DYNAMIC_TOPIC_CONFIG.value) for key, value in COMPACTION.items()}
        expected = {name: wanted for name in (topics.budget_state, topics.model_routes, *changelog_topics(app_id))}
        expected[topics.provider_state] = {**wanted, "segment.ms": ("60000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)}
        # a topic's altered configs reach every broker's view a moment after the change is acknowledged
        assert wait_until(lambda: all(_configs(admin, name) == want for name, want in expected.items()), timeout=30), {
            name: _configs(admin, name) for name in expected}
        [changed] = [record.getMessage() for record in caplog.records if "compaction settings" in record.getMessage()]
        assert topics.budget_state in changed and topics.model_routes not in changed  # created with them

        # set once: a later start changes nothing
        assert ensure_compaction(admin, [topics.budget_state, topics.provider_state, *changelog_topics(app_id)]) == []
        # a topic it cannot describe (here: none such) is named in a warning, and left
        assert ensure_compaction(admin, [f"cmp-{tag}-missing"]) == []
        assert f"left the compaction settings of topic cmp-{tag}-missing" in caplog.text
    finally:
        names = [*dataclasses.astuple(topics), *changelog_topics(app_id)]
        admin.delete_topics(names)
