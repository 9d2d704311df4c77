"""Topics created outside the worker must fit its partition count (processors/topics.py): calls partition p is
state partition p, and its alerts, dead letters and state go to partition p of the other topics."""

from __future__ import annotations

from llmpulse.config import Topics
from llmpulse.processors.topics import COMPACTION, MAX_RECORD_BYTES, layout_problems, topic_specs

TOPICS = Topics()


def test_what_the_worker_creates_fits_itself() -> None:
    created = {spec.topic: spec.num_partitions for spec in topic_specs(TOPICS, 4, otlp=True)}
    assert layout_problems(TOPICS, 4, created, otlp=True) == []
    assert created[TOPICS.fleet] == created[TOPICS.schemas] == 1  # not co-partitioned: one of each


def test_a_calls_topic_with_more_partitions_than_the_worker_is_refused() -> None:
    problems = layout_problems(TOPICS, 3, {TOPICS.calls: 6, TOPICS.alerts: 3})
    assert problems == [f"{TOPICS.calls} has 6 partitions, not 3"]


def test_output_topics_need_at_least_the_calls_partitions_and_otlp_exactly_when_read() -> None:
    existing = {TOPICS.calls: 6, TOPICS.alerts: 12, TOPICS.dead_letter: 1, TOPICS.otlp: 3, TOPICS.fleet: 1}
    assert layout_problems(TOPICS, 6, existing) == [f"{TOPICS.dead_letter} has 1 partition, fewer than 6"]
    assert layout_problems(TOPICS, 6, existing, otlp=True) == [
        f"{TOPICS.otlp} has 3 partitions, not 6", f"{TOPICS.dead_letter} has 1 partition, fewer than 6"]


def test_compacted_topics_close_segments_and_drop_tombstones_sooner_than_a_brokers_defaults() -> None:
    """Whoever starts on a compacted topic reads all it keeps: closed segments compacted, tombstones an hour."""
    specs = {spec.topic: spec.config for spec in topic_specs(TOPICS, 3)}
    compacted = {name for name, config in specs.items() if config.get("cleanup.policy") == "compact"}
    assert compacted == {TOPICS.provider_state, TOPICS.budget_state, TOPICS.model_routes, TOPICS.schemas}
    for name in compacted:
        assert {key: specs[name][key] for key in COMPACTION} == COMPACTION, name
    assert int(COMPACTION["segment.bytes"]) >= MAX_RECORD_BYTES  # a segment holds the largest record
    assert int(COMPACTION["segment.bytes"]) < 1 << 30 and int(COMPACTION["delete.retention.ms"]) < 86_400_000
