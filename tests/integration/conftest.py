"""Fixtures for tests that run real worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmpulse.local_registry import LocalRegistry, RegistryConfig
from tests.support.secure_kafka import SecuredKafka, secured_broker
from tests.support.worker import WorkerProcess


@pytest.fixture
def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers (``make(**extra_env)``); every one is stopped after the test."""
    started: list[WorkerProcess] = []

    def make(start: bool = True, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(kafka_bootstrap, tmp_path / f"w{len(started)}", extra_env=extra_env)
        if started:  # a second worker of the same app joins the first one's group and topics
            worker.app_id = started[0].app_id
        started.append(worker)
        return worker.start() if start else worker

    yield make
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(worker_factory: Callable[..., WorkerProcess]) -> WorkerProcess:
    return worker_factory()


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """One secured broker (SASL_SSL, SCRAM users, its own CA) for the session, beside the plaintext one."""
    with secured_broker(tmp_path_factory.mktemp("secure-kafka")) as kafka:
        yield kafka


@pytest.fixture(scope="session")
def apicurio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A real Confluent-compatible schema registry (Apicurio, in memory) for the session; ``.url`` is its
    ``/apis/ccompat/v7`` base. Fetched once with Maven into ~/.cache/llmpulse, then up in a few seconds."""
    from tests.support.worker import free_port

    log = tmp_path_factory.mktemp("apicurio") / "registry.log"
    with LocalRegistry(RegistryConfig(port=free_port(), log_file=log)) as registry:
        yield registry
