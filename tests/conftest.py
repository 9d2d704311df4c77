"""Shared fixtures. Tests under tests/integration/ are marked ``integration`` and get a real Kafka broker.

The broker is found in this order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a testcontainers Kafka when a Docker
engine answers; else a :class:`llmpulse.broker.LocalBroker` (Kafka 4.3.1 in a JVM) on free ports, started once
per session. The chosen address is exported as ``KAFKA_BOOTSTRAP_SERVERS`` for processes the tests start.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.waiting import free_port_pair

_INTEGRATION_DIR = Path(__file__).parent / "integration"
# cp-kafka 8.x is Apache Kafka 4.x, the protocol floor (KIP-896) the project targets.
_DEFAULT_IMAGE = "confluentinc/cp-kafka:8.0.0"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def _docker_answers() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=2).ping())
    except Exception:  # no SDK, no socket, engine down: all mean "no Docker"
        return False


@contextlib.contextmanager
def _container_broker() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get("LLMPULSE_TEST_KAFKA_IMAGE", _DEFAULT_IMAGE)
    with KafkaContainer(image=image).with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@contextlib.contextmanager
def _local_broker(data_dir: Path) -> Iterator[str]:
    from llmpulse.broker import BrokerConfig, LocalBroker

    broker = LocalBroker(BrokerConfig.from_env(port=free_port_pair(), data_dir=data_dir))
    try:
        yield broker.start().bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real Kafka broker for this test session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with contextlib.ExitStack() as stack:
        bootstrap = None
        if _docker_answers():
            try:
                bootstrap = stack.enter_context(_container_broker())
            except Exception as exc:  # e.g. the image cannot be pulled: the local broker still works
                warnings.warn(f"testcontainers Kafka failed ({exc}); using the local broker", stacklevel=1)
        if bootstrap is None:
            bootstrap = stack.enter_context(_local_broker(tmp_path_factory.mktemp("kafka")))
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        try:
            yield bootstrap
        finally:
            os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)


def _wait_for_leaders(admin: object, name: str, partitions: int, timeout: float = 30.0) -> None:
    """create_topics returns once the controller has the topic; wait for a leader on every partition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic=name, timeout=5).topics.get(name)  # type: ignore[attr-defined]
        ready = meta is not None and meta.error is None and len(meta.partitions) == partitions
        if ready and all(p.leader >= 0 for p in meta.partitions.values()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leader for every partition after {timeout} s")


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics (``make(prefix, partitions=3)``); they are deleted after the test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1)
        admin.create_topics([topic])[name].result(30)
        created.append(name)
        _wait_for_leaders(admin, name, partitions)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            with contextlib.suppress(Exception):  # best effort: the broker is thrown away anyway
                future.result(30)


@pytest.fixture
def fresh_topic(topic_factory: Callable[..., str]) -> str:
    """Name of a new, empty topic with 3 partitions."""
    return topic_factory("fresh", 3)
