"""The producer SDK: record LLM calls without ever blocking or failing the caller's own call.

    pulse = Pulse()                                   # service from LLMPULSE_SERVICE or the caller's package
    with pulse.track(provider="openai", model="gpt-4o") as call:
        reply = client.chat.completions.create(...)
        call.set_usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)

The caller's thread only appends a dict to a deque. A background thread packs calls into columnar
``llm_call_batch`` records (one Kafka record per micro-batch, keyed by service) and hands them to an
idempotent confluent-kafka producer. Undelivered calls (queued or in flight) are capped at
``max_buffered_calls``: beyond it new calls are dropped and counted, never raised, and everything within
the bound is delivered once the broker is reachable again.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from llmpulse import pii, schemas
from llmpulse.connection import KafkaUnavailable, diagnose
from llmpulse.producers.admission import Decision
from llmpulse.producers.assignment import assign_variant
from llmpulse.producers.batching import BatchEncoder, new_event_id
from llmpulse.producers.feedback import MARK, FeedbackEncoder, feedback_row
from llmpulse.producers.preflight import before_the_call, run_preflight
from llmpulse.producers.registry import encoder_for
from llmpulse.producers.settings import PulseSettings, detect_service
from llmpulse.producers.tracking import CallTracker
from llmpulse.schemas.writer_schemas import Announcement

log = logging.getLogger("llmpulse.sdk")

TEXT_FIELDS = (("prompt_text", "prompt_chars", "prompt_sha256"), ("response_text", "response_chars", None))
PROBLEM_REPEAT_S = 60.0  # the same broker problem is logged again at most this often


@dataclass(frozen=True, slots=True)
class PulseStats:
    """Counters an operator can check: what was recorded, delivered, dropped, and why."""

    recorded: int
    delivered: int
    dropped_buffer_full: int
    dropped_delivery_failed: int
    dropped_encoding: int
    pending: int
    broker_errors: int
    schemas_announced: int = 0  # writer schemas delivered to the schemas topic (three, once per process)


class Pulse:
    """Thread-safe LLM call recorder. Create one per process and share it."""

    def __init__(self, settings: PulseSettings | None = None, **overrides: Any) -> None:
        settings = settings or PulseSettings()
        if overrides:
            settings = replace(settings, **overrides)
        if not settings.service:
            settings = replace(settings, service=detect_service())
        self.settings = settings
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pending = 0  # queued + in flight, the quantity the buffer bound applies to
        self._first_queued_at: float | None = None  # monotonic time the oldest queued call was recorded
        self._flush_asked = False  # flush() or close(): send what is queued now, however few
        self._counts = dict.fromkeys(
            ("recorded", "delivered", "buffer_full", "delivery_failed", "encoding", "broker_errors",
             "schemas_announced"), 0
        )
        self._last_problem = ("", 0.0)  # (what was logged, when)
        self._feedback_encoder: FeedbackEncoder | None = None
        self._encoder = encoder_for(f"{settings.service}-{new_event_id()[:8]}", settings.topic,
                                    settings.schema_registry_url, settings.schema_registry_auth or None)
        config = settings.producer_config()
        config["error_cb"] = self._on_broker_error
        self._producer = Producer(config)
        self._thread = threading.Thread(target=self._run, name="llmpulse-sdk", daemon=True)
        self._thread.start()
        self.gate, self.guard = before_the_call(settings, self.record)
        # A weak reference: registering the bound method would keep every Pulse alive until the process exits.
        closer = weakref.WeakMethod(self.close)
        atexit.register(lambda: (method := closer()) is not None and method())

    # ---- caller side: must stay cheap and must never raise ---------------------------------------
    def record(self, **call: Any) -> bool:
        """Queue one finished call (fields of schemas/llm_call.v1.avsc). False if it was dropped."""
        try:
            with self._lock:
                if self._pending >= self.settings.max_buffered_calls:
                    self._counts["buffer_full"] += 1
                    return False
                self._pending += 1
                self._counts["recorded"] += 1
                if self._first_queued_at is None:
                    self._first_queued_at = time.monotonic()
            call.setdefault("timestamp_ms", int(time.time() * 1000))
            self._queue.append(call)
            if len(self._queue) >= self.settings.batch_max_calls:
                self._wake.set()
            return True
        except Exception:  # telemetry must never break the caller
            log.debug("llmpulse: record failed", exc_info=True)
            return False

    def admit(self, *, service: str | None = None, user: str | None = None, model: str, provider: str = "",
              estimated_input_tokens: int = 0, max_output_tokens: int | None = None) -> Decision:
        """May this call be sent? From memory, never raises (producers/admission.py); denials are recorded."""
        return self.gate.admit(service=service or self.settings.service, user=user, model=model, provider=provider,
                               estimated_input_tokens=estimated_input_tokens, max_output_tokens=max_output_tokens)

    def preflight(self, **request: Any) -> dict[str, Any]:
        """Guard and gate one request before it is sent (producers/preflight.py): raises PromptBlocked or
        BudgetExceeded, nothing else; returns fields for the call's record."""
        return run_preflight(self, **request)

    def feedback(self, request_id: str, *, thumbs: bool | None = None, rating: float | None = None,
                 score: float | None = None, correct: bool | None = None, source: str = "user",
                 service: str | None = None, timestamp_ms: int | None = None) -> bool:
        """Queue feedback on the call whose event_id is ``request_id``: exactly one of thumbs, a 1-5 rating, an
        evaluator score in 0..1 or a correct/incorrect label (producers/feedback.py). Counted and bounded like
        calls; never raises, never blocks. False if malformed or dropped."""
        row = feedback_row(request_id, thumbs=thumbs, rating=rating, score=score, correct=correct, source=source,
                           service=service, timestamp_ms=timestamp_ms)
        if row is None:
            with self._lock:
                self._counts["encoding"] += 1
            return False
        return self.record(**row)

    @staticmethod
    def assign_variant(experiment: str, unit_id: str, splits: Any = None) -> str:
        """Deterministic variant of ``unit_id`` in ``experiment`` (producers/assignment.py); ``splits`` is a
        {variant: weight} mapping or a list of equally weighted names (default control/treatment 50/50)."""
        return assign_variant(experiment, unit_id, splits)

    def track(self, provider: str, model: str, **fields: Any) -> CallTracker:
        """Context manager timing one call; an exception inside is recorded as an error and re-raised."""
        return CallTracker(self, provider=provider, request_model=model, **fields)

    # ---- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> int:
        """Send everything queued and wait up to ``timeout`` s for delivery; returns calls still pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._queue:
                self._producer.flush(min(0.1, max(0.0, deadline - time.monotonic())))
                if self._pending == 0:
                    break
            else:
                self._flush_asked = True
                self._wake.set()
                time.sleep(0.005)
        return self._pending

    def close(self, timeout: float | None = None) -> None:
        """Flush within the shutdown timeout and stop the background thread. Safe to call twice."""
        if self._stopping.is_set():
            return
        self.flush(self.settings.shutdown_timeout_s if timeout is None else timeout)
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        if self.gate.budgets is not None:
            self.gate.budgets.close()
        if self._pending:
            log.warning("llmpulse: %d calls were not delivered before shutdown", self._pending)

    def stats(self) -> PulseStats:
        counts = self._counts
        return PulseStats(
            recorded=counts["recorded"],
            delivered=counts["delivered"],
            dropped_buffer_full=counts["buffer_full"],
            dropped_delivery_failed=counts["delivery_failed"],
            dropped_encoding=counts["encoding"],
            pending=self._pending,
            broker_errors=counts["broker_errors"],
            schemas_announced=counts["schemas_announced"],
        )

    def __enter__(self) -> Pulse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- background thread -------------------------------------------------------------------------
    def _run(self) -> None:
        linger = self.settings.linger_ms / 1000.0
        try:
            self._announce_schemas()
        except Exception:
            log.exception("llmpulse: announcing the writer schemas failed (continuing)")
        while not self._stopping.is_set():
            self._wake.wait(linger)
            self._wake.clear()
            try:
                if self._due():
                    self._drain()
                self._producer.poll(0)
            except Exception:
                log.exception("llmpulse: background sender error (continuing)")

    def _announce_schemas(self) -> None:
        """Before the first record, the writer schemas this SDK writes, on the schemas topic: a worker older than
        this SDK reads them there instead of refusing its records (docs/schemas.md, "Upgrades"). Waits for their
        delivery up to ``schema_announce_timeout_s`` in this thread; the caller never waits. Not with a registry,
        which serves schemas by id."""
        encoder = self._encoder
        if not self.settings.schemas_topic or not isinstance(encoder, BatchEncoder):
            return
        announced = [Announcement(codec.name, codec.raw) for codec in (encoder.batch_codec, encoder.call_codec)]
        announced.append(Announcement(schemas.FEEDBACK, schemas.raw(schemas.FEEDBACK)))

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is None:
                with self._lock:
                    self._counts["schemas_announced"] += 1
            else:
                log.warning("llmpulse: writer schema not announced on %s: %s", self.settings.schemas_topic, err)

        for announcement in announced:
            self._producer.produce(self.settings.schemas_topic, announcement.value(), key=announcement.key(),
                                   on_delivery=on_delivery)
        deadline = time.monotonic() + self.settings.schema_announce_timeout_s
        waiting = len(self._producer)
        while waiting and time.monotonic() < deadline and not self._stopping.is_set():
            waiting = self._producer.flush(0.1)
        if waiting:
            log.warning("llmpulse: writer schemas not yet delivered to %s after %.0f s; sending calls meanwhile",
                        self.settings.schemas_topic, self.settings.schema_announce_timeout_s)

    def _due(self) -> bool:
        """Send what is queued now? When asked to (flush, close), when enough calls wait
        (``batch_min_calls``, or a full batch), or when the oldest has waited ``max_linger_ms``."""
        settings = self.settings
        with self._lock:
            queued, since = len(self._queue), self._first_queued_at
            asked, self._flush_asked = self._flush_asked, False
        if not queued:
            return False
        return (asked or queued >= min(settings.batch_min_calls, settings.batch_max_calls)
                or since is None or time.monotonic() - since >= settings.max_linger_ms / 1000.0)

    def _drain(self) -> None:
        with self._lock:  # what is recorded from now on starts a new wait
            self._first_queued_at = None
        while self._queue:
            rows = self._take(self.settings.batch_max_calls)
            by_service: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                service = row.get("service") or self.settings.service
                if not isinstance(service, str):  # e.g. a list: unhashable, and no schema would take it
                    log.warning("llmpulse: dropping a call whose service is a %s", type(service).__name__)
                    self._settle(1, "encoding")
                    continue
                by_service.setdefault(service, []).append(row)
            for service, group in by_service.items():
                self._send(service, group)
        with self._lock:
            if not self._queue:
                self._first_queued_at = None

    def _take(self, limit: int) -> list[dict[str, Any]]:
        rows = []
        queue = self._queue
        while queue and len(rows) < limit:
            rows.append(queue.popleft())
        return rows

    def _send(self, service: str, rows: list[dict[str, Any]]) -> None:
        if any(MARK in row for row in rows):
            self._send_feedback(service, [row for row in rows if MARK in row])
            rows = [row for row in rows if MARK not in row]
        # Completed one by one: _complete is not idempotent (it replaces text by its redaction), so a call
        # that fails here is dropped alone and its batch-mates are never completed twice.
        completed = [row for row in rows if self._completed(service, row)]
        if completed:
            self._ship(service, completed)

    def _send_feedback(self, service: str, rows: list[dict[str, Any]]) -> None:
        """Feedback goes on the calls topic keyed by service, like the calls it rates (producers/feedback.py)."""
        try:
            if self._feedback_encoder is None:
                self._feedback_encoder = FeedbackEncoder(f"{self.settings.service}-{new_event_id()[:8]}")
            payload = self._feedback_encoder.encode(service, rows)
        except Exception as exc:
            log.warning("llmpulse: dropping %d feedback events that do not fit the schema: %s", len(rows), exc)
            self._settle(len(rows), "encoding")
            return
        if not self._produce(service, payload, len(rows)):
            self._settle(len(rows), "delivery_failed")

    def _completed(self, service: str, row: dict[str, Any]) -> bool:
        try:
            self._complete(service, row)
            return True
        except Exception as exc:
            log.warning("llmpulse: dropping a call with unusable fields: %s", exc)
            self._settle(1, "encoding")
            return False

    def _ship(self, service: str, rows: list[dict[str, Any]]) -> None:
        try:
            payload = self._encoder.encode_batch(rows)
        except Exception as exc:
            self._send_individually(service, rows, exc)
            return
        if self._produce(service, payload, len(rows)):
            return
        if len(rows) == 1:
            log.warning("llmpulse: dropping a call of %d bytes, larger than a Kafka record may be", len(payload))
            self._settle(1, "delivery_failed")
            return
        half = len(rows) // 2  # too large for one Kafka record: halve until each part fits
        self._ship(service, rows[:half])
        self._ship(service, rows[half:])

    def _send_individually(self, service: str, rows: list[dict[str, Any]], exc: Exception) -> None:
        """One malformed call must not cost its batch-mates: retry them one by one."""
        log.warning("llmpulse: batch encoding failed (%s); isolating the bad calls", exc)
        for row in rows:
            try:
                payload = self._encoder.encode_batch([row])
            except Exception as row_exc:
                log.warning("llmpulse: dropping a call that does not fit the schema: %s", row_exc)
                self._settle(1, "encoding")
                continue
            if not self._produce(service, payload, 1):
                log.warning("llmpulse: dropping a call of %d bytes, larger than a Kafka record may be", len(payload))
                self._settle(1, "delivery_failed")

    def _produce(self, service: str, payload: bytes, count: int) -> bool:
        """Hand one record to librdkafka; False (nothing settled) when it is too large to be sent at all."""

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            self._settle(count, "delivery_failed" if err else "delivered")
            if err:
                log.warning("llmpulse: batch of %d calls not delivered: %s", count, err)

        while True:
            try:
                self._producer.produce(self.settings.topic, payload, key=service.encode(), on_delivery=on_delivery)
                return True
            except BufferError:  # librdkafka's own queue is full: let it drain, never drop silently
                self._producer.poll(0.1)
                if self._stopping.is_set():
                    self._settle(count, "delivery_failed")
                    return True
            except KafkaException as exc:  # refused before queueing: settle here or the calls stay pending
                if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    return False
                log.warning("llmpulse: batch of %d calls refused by the Kafka client: %s", count, exc)
                self._settle(count, "delivery_failed")
                return True

    def _settle(self, count: int, outcome: str) -> None:
        with self._lock:
            self._pending -= count
            self._counts[outcome] += count

    def _complete(self, service: str, row: dict[str, Any]) -> None:
        """Fill what the caller left out and protect text; runs off the caller's thread."""
        row.setdefault("event_id", new_event_id())
        row["service"] = service
        row.setdefault("status", "ok")
        for text_field, length_field, hash_field in TEXT_FIELDS:
            text = row.get(text_field)
            if text is None:
                continue
            row[length_field] = len(text)
            if hash_field:
                row[hash_field] = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
            row[text_field] = self._protect(text)

    def _protect(self, text: str) -> str | None:
        if not self.settings.capture_text:
            return None
        text = text[: self.settings.max_text_chars]
        return pii.redact(text) if self.settings.redact_pii else text

    def _on_broker_error(self, err: KafkaError) -> None:
        self._counts["broker_errors"] += 1
        try:  # one warning per problem (and a reminder a minute), not librdkafka's line per reconnect
            problem = diagnose([(err.name(), err.str())], self.settings.kafka)
            said, when = self._last_problem
            if problem is None or (problem.reason == said and time.monotonic() - when < PROBLEM_REPEAT_S):
                return
            self._last_problem = (problem.reason, time.monotonic())
            log.warning("llmpulse: %s (calls are kept, up to %d, until Kafka takes them)",
                        KafkaUnavailable(self.settings.bootstrap_servers, self.settings.kafka, problem),
                        self.settings.max_buffered_calls)
        except Exception:
            log.debug("llmpulse: broker error report failed", exc_info=True)


@contextmanager
def pulse_session(**overrides: Any) -> Iterator[Pulse]:
    """A Pulse that is closed (flushed) on exit, for scripts and tests."""
    pulse = Pulse(**overrides)
    try:
        yield pulse
    finally:
        pulse.close()
