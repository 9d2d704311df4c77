"""Layer markers and shared fixtures.

Each folder under tests/ is one layer, and a test's marker is its folder's name, given here and nowhere else:
``unit`` (neither a broker nor external binaries: ``make test-fast``), ``integration`` (a real Kafka broker),
``instrumentation`` (the real OpenAI/Anthropic clients against a local fake API), ``ops`` (promtool, amtool,
helm, Prometheus, Alertmanager, the Java and Node producers of examples/), ``reliability`` (faults against real
broker and worker processes). The markers are declared in pyproject.toml; tests/support/ holds helpers, not tests.

Tests that need a broker get one, found in this order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a testcontainers
Kafka when a Docker engine answers; else a :class:`llmpulse.broker.LocalBroker` (Kafka 4.3.1 in a JVM) on free
ports, started once per session. The chosen address is exported as ``KAFKA_BOOTSTRAP_SERVERS`` for processes the
tests start.
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

_TESTS = Path(__file__).parent
# A layer's timeout where its tests set none (the ini default applies elsewhere).
_LAYER_TIMEOUT_S = {"reliability": 150}
# cp-kafka 8.x is Apache Kafka 4.x, the protocol floor (KIP-896) the project targets.
_DEFAULT_IMAGE = "confluentinc/cp-kafka:8.0.0"


def _declared_markers(config: pytest.Config) -> set[str]:
    return {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its folder's layer; a test outside a layer folder, or marked with another
    layer by hand, stops the run."""
    layers = _declared_markers(config) & {path.name for path in _TESTS.iterdir() if path.is_dir()}
    for item in items:
        path = Path(item.path)
        parts = path.relative_to(_TESTS).parts if path.is_relative_to(_TESTS) else ()
        layer = parts[0] if len(parts) > 1 else ""
        if layer not in layers:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in a layer folder of tests/ "
                                    f"({', '.join(sorted(layers))}), whose name is a marker in pyproject.toml")
        foreign = {mark.name for mark in item.iter_markers() if mark.name in layers} - {layer}
        if foreign:
            raise pytest.UsageError(f"{item.nodeid}: marked {', '.join(sorted(foreign))} by hand; "
                                    f"its layer is its folder's ({layer})")
        item.add_marker(layer)
        if layer in _LAYER_TIMEOUT_S and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_LAYER_TIMEOUT_S[layer]))


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
    """Create uniquely named topics (``make(prefix, partitions=3, **config)``, config: topic properties such as
    ``max.message.bytes``); they are deleted after the test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 3, **config: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)
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
