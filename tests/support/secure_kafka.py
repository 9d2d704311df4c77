"""A secured local broker for tests: ``llmpulse broker start --secure``'s code (SASL_SSL, SCRAM users, a local CA)
on free ports, in a data directory of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmpulse.broker import BrokerConfig, LocalBroker
from llmpulse.broker_security import ADMIN, SecureBroker
from tests.support.waiting import free_port_pair


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
