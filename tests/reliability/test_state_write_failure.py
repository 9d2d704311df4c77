"""A worker that cannot write its state stops, saying why, instead of going on with a gap in its changelog.

The state table's changelog is created beforehand with a record limit too small for the state blobs (as a
topic an operator made by hand might be): the first refused record must stop the worker, and nothing it
writes after the refused record may land past it (docs/design.md, "Exactly-once state under at-least-once
delivery")."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.topics import changelog_topics
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


def test_a_worker_whose_state_records_are_refused_stops_and_says_why(
    workers, priced_traffic, kafka_bootstrap
) -> None:
    worker = workers(start=False)
    changelog = changelog_topics(worker.app_id)[0]  # the calls engines' table's
    partitions = ProcessorSettings().topic_partitions
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    small = NewTopic(changelog, num_partitions=partitions, replication_factor=1,
                     config={"cleanup.policy": "compact", "max.message.bytes": "200"})
    admin.create_topics([small])[changelog].result(30)
    worker.start(timeout=90)

    priced_traffic(worker.topic("calls"), users=300).produce(20)  # blobs > 200 B even as lz4
    assert worker.process is not None
    stopped = wait_until(lambda: worker.process.poll() is not None, 90)
    assert stopped, f"the worker went on without its state:\n{worker.log_tail()}"
    assert worker.process.returncode != 0
    log = worker.log_path.read_text(errors="replace")
    assert f"state record not written to {changelog}" in log
    assert "too large" in log
