"""ChangelogWriter: the calls engines' state records, written to the state table's changelog through librdkafka.

At high cardinality a group of records changes hundreds of state keys (a key per series and time slot), and
each written through faust's producer (aiokafka, pure Python: a future, a buffer entry and a batch append per
record) cost more than the engine's own work on it. Here each record is one ``produce`` call into librdkafka's
queue, batched and sent by its own threads; a thread of ours serves the delivery reports.

What the state's correctness needs of it (docs/design.md, "Exactly-once state under at-least-once delivery"):

- **Order per partition.** A cursor is written after the state it covers, in the same changelog partition, and
  must never be visible without it. The producer is idempotent (order kept across retries), never times a
  record out (while the broker is away, records wait in librdkafka's queue, and a full queue holds the writer
  back), and gapless: if a record fails for good, librdkafka stops the producer instead of delivering later
  ones past the gap (a fatal error).
- **Awaited writes.** ``write_awaited`` returns a future that settles on delivery (the run plan, which must be
  on the broker before its runs' output).
- **Nothing left behind.** ``flush`` waits for every record written so far: before a revoked partition moves
  to its next owner, and at shutdown.
- **A failure stops the worker.** State it can no longer write in order cannot be trusted: the producer's fatal
  error, or a failed awaited write, calls ``on_failure`` (the worker crashes its app, so a restart replays from
  the persisted cursor) and every later write raises ``ChangelogFailed``.

Plain writes ask for no delivery report (a Python call per record would cost a third of the gain); a failure
of one is the producer's fatal error, which ``error_cb`` hears.

The faust table still holds the data (its recovery reads the same changelog topic, whoever wrote it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from llmpulse.processors.topics import MAX_RECORD_BYTES

log = logging.getLogger("llmpulse.worker.changelog")

POLL_S = 0.1  # how long the delivery thread waits for reports at a time (also how soon it notices close)
QUEUE_FULL_WAIT_S = 0.05  # librdkafka's queue is full: serve reports this long, then try again
FLUSH_STEP_S = 0.1  # a flush checks this often whether the writer failed meanwhile
FATAL_REASON_WAIT_S = 2.0  # produce said only "Fatal error": wait this long for error_cb to bring the reason


class ChangelogFailed(RuntimeError):
    """A state record could not be written; nothing more may be, the worker must restart."""


class ChangelogWriter:
    """``write``/``write_awaited``/``flush`` state records of one changelog topic through a librdkafka producer."""

    def __init__(self, config: dict[str, Any], topic: str, on_failure: Callable[[ChangelogFailed], None],
                 producer: Callable[[dict[str, Any]], Any] = Producer) -> None:
        self.topic = topic
        self._on_failure = on_failure
        self._failure: ChangelogFailed | None = None
        self._failing = threading.Lock()  # the first failure wins, whichever thread sees it (poll, flush, produce)
        self._fatal: Any = None  # the producer's fatal error as error_cb reported it (with its reason)
        self._fatal_heard = threading.Event()
        self._producer = producer({
            **config,
            "enable.idempotence": True,  # order per partition kept across retries
            "enable.gapless.guarantee": True,  # a record lost for good stops the producer: no later record lands
            "message.timeout.ms": 0,  # never give a record up (the guarantee does not cover time-outs)
            "error_cb": self._on_error,
            # in librdkafka's own threads, not the worker's: with one record a group at 10 services and 10,000
            # users (5,000 calls/s) the changelog took 101 instead of 176 bytes a call, the worker's CPU unchanged
            "compression.type": "lz4",
            "linger.ms": 0,  # an awaited write (the run plan) holds its group back until it is on the broker
            "message.max.bytes": MAX_RECORD_BYTES,
        })
        self.written = 0  # records handed to librdkafka so far
        self._awaited: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve_reports, name="llmpulse-changelog", daemon=True)
        self._thread.start()

    # ---- writing ---------------------------------------------------------------------------------------
    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue one record (``None``: a tombstone); delivered in order with every other of its partition."""
        self._produce(partition, key, value, None)

    def write_awaited(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one record; the future settles once it is on the broker (or fails with ``ChangelogFailed``)."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()
        waiting = (loop, delivered)

        def report(error: Any, _message: Any) -> None:
            self._awaited.discard(waiting)
            if error is not None:
                self._fail(error)
            loop.call_soon_threadsafe(_settle, delivered, self._failure if error is not None else None)

        self._awaited.add(waiting)
        try:
            self._produce(partition, key, value, report)
        except ChangelogFailed:
            self._awaited.discard(waiting)
            raise
        return delivered

    async def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every record written so far is delivered; returns how many are still not (0 normally)."""
        left = await asyncio.get_running_loop().run_in_executor(None, self._flush, timeout_s)
        if self._failure is not None:
            raise self._failure
        return left

    def pending(self) -> int:
        """Records queued or in flight (until their delivery report is served: within ``POLL_S``)."""
        return len(self._producer)

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout_s``), then stop the delivery thread; returns what is left."""
        left = self._flush(timeout_s)
        self._closed.set()
        self._thread.join()
        return left

    # ---- internals -------------------------------------------------------------------------------------
    def _produce(self, partition: int, key: bytes, value: bytes | None,
                 on_delivery: Callable[[Any, Any], None] | None) -> None:
        if self._failure is not None:
            raise self._failure
        while True:
            try:
                if on_delivery is None:
                    self._producer.produce(self.topic, value=value, key=key, partition=partition)
                else:
                    self._producer.produce(self.topic, value=value, key=key, partition=partition,
                                           on_delivery=on_delivery)
                self.written += 1
                return
            except BufferError:  # librdkafka's queue is full: wait for deliveries to make room
                self._poll(QUEUE_FULL_WAIT_S)
            except KafkaException as exc:  # the producer stopped (a fatal error) or refused the record
                self._fail(exc.args[0])
            if self._failure is not None:
                raise self._failure from None

    def _poll(self, timeout_s: float) -> None:
        try:
            self._producer.poll(timeout_s)
        except KafkaException as exc:  # confluent-kafka raises the producer's fatal error from poll and flush
            self._fail(exc.args[0])

    def _flush(self, timeout_s: float) -> int:
        """Flush in steps of ``FLUSH_STEP_S``: records left behind a failure are never delivered, so waiting stops
        as soon as the writer failed instead of at ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                left = int(self._producer.flush(max(0.0, min(FLUSH_STEP_S, deadline - time.monotonic()))))
            except KafkaException as exc:
                self._fail(exc.args[0])
                return len(self._producer)
            if not left or self._failure is not None or time.monotonic() >= deadline:
                return left

    def _on_error(self, error: Any) -> None:
        if error.fatal():  # others (a broker away, a retried request) librdkafka recovers from by itself
            self._fatal = error
            self._fatal_heard.set()
            self._fail(error)

    def _fail(self, error: Any) -> None:
        if self._failure is not None:
            return
        if _says_only_fatal(error):
            error = self._fatal_reason(error)
        with self._failing:
            if self._failure is not None:
                return
            failure = self._failure = ChangelogFailed(f"state record not written to {self.topic}: {error}")
            awaited, self._awaited = self._awaited, set()
        log.error("%s; the worker stops, its next start replays from the persisted cursors", failure)
        for loop, delivered in awaited:
            loop.call_soon_threadsafe(_settle, delivered, failure)
        self._on_failure(failure)

    def _fatal_reason(self, bare: Any) -> Any:
        """The producer's fatal error with its reason (a refused record, say): produce, poll and flush raise only
        "Fatal error" once the producer stopped, and the reason reaches error_cb on a poll, the delivery thread's
        (a poll is never nested in a callback here). ``bare`` if it does not come within ``FATAL_REASON_WAIT_S``,
        or on the delivery thread itself (its reports come after error_cb's, librdkafka serves them in order)."""
        if threading.current_thread() is not self._thread:
            self._fatal_heard.wait(FATAL_REASON_WAIT_S)
        return self._fatal if self._fatal is not None else bare

    def _serve_reports(self) -> None:
        while not self._closed.is_set() and self._failure is None:
            self._poll(POLL_S)


def _says_only_fatal(error: Any) -> bool:
    return isinstance(error, KafkaError) and error.code() == KafkaError._FATAL


def _settle(future: asyncio.Future[None], failure: ChangelogFailed | None) -> None:
    if future.done():
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(None)
