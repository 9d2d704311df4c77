"""A secured local broker for tests: ``llmpulse broker start --secure``'s code (SASL_SSL, SCRAM users, a local CA)
on free ports, in a data directory of its own."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpulse.broker import BrokerConfig, LocalBroker
from llmpulse.broker_security import ADMIN, SecureBroker
from llmpulse.producers import Pulse
from tests.support.cli import run_cli
from tests.support.waiting import free_port_pair
from tests.support.worker import WorkerProcess


@dataclass(frozen=True, slots=True)
class SecuredKafka:
    bootstrap: str
    files: SecureBroker  # CA, users and passwords

    def env(self, user: str = ADMIN, **overrides: str) -> dict[str, str]:
        """The variables a process started by a test needs to reach the broker as ``user``."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **self.files.client_env(user), **overrides}


@contextlib.contextmanager
def secured_broker(data_dir: Path, acls: bool = False) -> Iterator[SecuredKafka]:
    """``acls``: the authorizer on, with llmpulse's least-privilege ACLs (llmpulse/broker_acls.py)."""
    broker = LocalBroker(BrokerConfig.from_env(port=free_port_pair(), data_dir=data_dir, secure=True, acls=acls))
    try:
        status = broker.start()
        assert broker.secure is not None
        yield SecuredKafka(status.bootstrap, broker.secure)
    finally:
        broker.stop()


def send_slow_calls(pulse: Pulse, count: int = 120) -> None:
    """``count`` gpt-4o calls at about 3 s each, delivered: the p95 latency rule (2 s) fires on them."""
    for i in range(count):
        pulse.record(provider="openai", request_model="gpt-4o", latency_ms=3000.0 + i, input_tokens=120,
                     output_tokens=40)
    assert pulse.flush(30) == 0
    assert pulse.stats().delivered == count


def first_alert(kafka: SecuredKafka, worker: WorkerProcess, user: str = "oncall", timeout: int = 90) -> dict[str, Any]:
    """The first member alert on ``worker``'s alerts topic, as ``llmpulse alerts tail --json`` run by ``user``
    prints it."""
    tail = run_cli("alerts", "tail", "--json", "--members", "--from-beginning", "--max", "1", "--timeout",
                   str(timeout), env={**worker.env, **kafka.env(user)})
    assert tail.returncode == 0, tail.stderr
    return dict(json.loads(tail.stdout.splitlines()[0]))
