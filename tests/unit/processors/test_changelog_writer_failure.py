"""Why a worker stopped, when its state writer's producer stops (processors/changelog_writer.py).

Once librdkafka stops a producer for good, ``produce`` raises only "Local: Fatal error"; the reason (the
record the broker refused as too large, say) reaches ``error_cb`` on the next poll. The on-call reads the
reason in the worker's last log line, whichever of the two the writer happened to see first."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from llmpulse.processors import changelog_writer
from llmpulse.processors.changelog_writer import ChangelogFailed, ChangelogWriter
from tests.support.waiting import wait_until

REASON = "ProduceRequest for changelog [0] with 3 message(s) failed: Broker: Message size too large"


class StoppingProducer:
    """A producer the broker stops on its second record: ``produce`` then raises the bare fatal error, and the
    reason waits for the writer's delivery thread to poll. A poll that finds nothing to serve sleeps its whole
    timeout, as librdkafka's would between events, so the reason always arrives after the bare error."""

    def __init__(self, config: dict[str, Any], reason: str | None = REASON) -> None:
        self._error_cb = config["error_cb"]
        self._reason = reason
        self._produced = 0
        self._pending: KafkaError | None = None
        self._lock = threading.Lock()
        self.flush_waited_s = 0.0  # how long flushes waited for records that never go

    def produce(self, topic: str, value: bytes | None, key: bytes, partition: int, **_: Any) -> None:
        self._produced += 1
        if self._produced >= 2:
            with self._lock:
                if self._produced == 2 and self._reason is not None:
                    self._pending = KafkaError(KafkaError._GAPLESS_GUARANTEE, self._reason, fatal=True)
            raise KafkaException(KafkaError(KafkaError._FATAL, "Unable to produce message: Local: Fatal error"))

    def poll(self, timeout: float) -> int:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            time.sleep(timeout)
            return 0
        self._error_cb(pending)
        return 1

    def flush(self, timeout: float) -> int:
        """Records after the refused one are never delivered: a flush waits its whole timeout for them."""
        stuck = max(0, self._produced - 1)
        if stuck:
            self.flush_waited_s += timeout
            time.sleep(timeout)
        return stuck

    def __len__(self) -> int:
        return 0


def _writer(failures: list[ChangelogFailed], reason: str | None = REASON,
            made: list[StoppingProducer] | None = None) -> ChangelogWriter:
    made = [] if made is None else made

    def producer(config: dict[str, Any]) -> StoppingProducer:
        made.append(StoppingProducer(config, reason))
        return made[-1]

    return ChangelogWriter({}, "changelog", failures.append, producer=producer)


def test_the_worker_is_told_why_its_producer_stopped_not_only_that_it_did() -> None:
    failures: list[ChangelogFailed] = []
    writer = _writer(failures)
    writer.write(0, b"series", b"state")
    with pytest.raises(ChangelogFailed, match="too large"):
        writer.write(0, b"big", b"x" * 1_000)
    with pytest.raises(ChangelogFailed, match="too large"):  # every later write says the same
        writer.write(0, b"cursor", b"after it")
    # the worker is told by the thread that heard the reason, which may still be on its way there
    assert wait_until(lambda: failures, 5, step=0.01)
    assert len(failures) == 1 and "too large" in str(failures[0])
    writer.close(timeout_s=0)


def test_a_reason_that_never_comes_leaves_the_bare_fatal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog_writer, "FATAL_REASON_WAIT_S", 0.3)
    failures: list[ChangelogFailed] = []
    writer = _writer(failures, reason=None)
    writer.write(0, b"series", b"state")
    with pytest.raises(ChangelogFailed, match="Fatal error"):
        writer.write(0, b"big", b"x" * 1_000)
    assert len(failures) == 1
    writer.close(timeout_s=0)


def test_a_flush_behind_a_refused_record_ends_with_the_reason_not_at_its_timeout() -> None:
    """A revoke or a stop flushes; behind a refused record nothing more is delivered, so waiting out the 30 s
    would only hold the worker back from stopping."""
    made: list[StoppingProducer] = []
    writer = _writer([], made=made)
    writer.write(0, b"series", b"state")
    with pytest.raises(ChangelogFailed, match="too large"):
        writer.write(0, b"big", b"x" * 1_000)
    with pytest.raises(ChangelogFailed, match="too large"):
        asyncio.run(writer.flush(timeout_s=30))
    assert made[0].flush_waited_s < 1
    writer.close(timeout_s=0)
