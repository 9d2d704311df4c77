"""The SDK with no broker (a closed port): never raises, bounds its buffer, isolates bad calls, shuts down on time."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmpulse import schemas
from llmpulse.config import KafkaSecurity
from llmpulse.processors.core.validation import Limits
from llmpulse.processors.wire.calls import CallDecoder
from llmpulse.producers import Pulse, PulseSettings
from llmpulse.producers.settings import detect_service
from llmpulse.schemas.single_object import SchemaCodec
from tests.support.waiting import wait_until

CLOSED_PORT = "127.0.0.1:1"
ONE_MEBIBYTE = 1 << 20  # librdkafka's default message.max.bytes is just under 1 MB


def _settings(**fields: Any) -> PulseSettings:
    # Every field given: the environment of whoever runs the tests must not change the answers.
    base: dict[str, Any] = {
        "bootstrap_servers": CLOSED_PORT,
        "topic": "llm-calls-test",
        "service": "checkout",
        "batch_max_calls": 500,
        "linger_ms": 5,
        "batch_min_calls": 1,  # every linger_ms, as these tests expect unless they say otherwise
        "max_linger_ms": 1000,
        "max_buffered_calls": 100_000,
        "capture_text": False,
        "redact_pii": True,
        "max_text_chars": 16_384,
        "compression": "lz4",
        "shutdown_timeout_s": 0.1,
        "kafka": KafkaSecurity(),  # not KAFKA_SECURITY_PROTOCOL and friends from the environment
    }
    base.update(fields)
    return PulseSettings(**base)


class _Handover:
    """Stands in front of the real producer and counts the calls in every record librdkafka accepted."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.codec = SchemaCodec(schemas.LLM_CALL_BATCH)
        self.records = 0
        self.calls = 0

    def produce(self, topic: str, value: bytes, **kwargs: Any) -> None:
        self.producer.produce(topic, value, **kwargs)  # raises exactly as the real one does
        self.records += 1
        self.calls += self.codec.decode(value)["count"]

    def poll(self, timeout: float) -> int:
        return self.producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)

    def __len__(self) -> int:
        return len(self.producer)


@pytest.fixture
def make_pulse() -> Iterator[Callable[..., Pulse]]:
    made: list[Pulse] = []
    logging.getLogger("llmpulse.sdk.librdkafka").setLevel(logging.CRITICAL)  # connection refused, repeatedly

    def make(**fields: Any) -> Pulse:
        pulse = Pulse(_settings(**fields))
        pulse._producer = _Handover(pulse._producer)  # type: ignore[assignment]
        made.append(pulse)
        return pulse

    yield make
    for pulse in made:
        pulse.close(timeout=0.05)


def _handover(pulse: Pulse) -> _Handover:
    return pulse._producer  # type: ignore[return-value]


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for the SDK's background thread to get there."""
    assert wait_until(condition, timeout, step=0.005), "condition not reached"


def _drained(pulse: Pulse) -> Callable[[], bool]:
    """True once every recorded call was handed to librdkafka or dropped (none is still being packed)."""

    def check() -> bool:
        s = pulse.stats()
        settled = s.dropped_encoding + s.dropped_delivery_failed + s.delivered
        return _handover(pulse).calls + settled == s.recorded

    return check


def _good(i: int) -> dict[str, Any]:
    return {"provider": "openai", "request_model": "gpt-4o", "latency_ms": 100.0 + i, "input_tokens": i}


def test_record_never_raises(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(linger_ms=1000)  # nothing drains while the calls are recorded
    garbage = [
        {"input_tokens": "many", "status": "weird"},
        {"latency_ms": object()},
        {"labels": 5, "prompt_text": b"bytes"},
        {"service": ["not", "a", "name"]},
        {},
    ]
    for _ in range(200):
        for fields in garbage:
            assert pulse.record(**fields) is True
    assert pulse.stats().recorded == 1000


def test_a_quiet_service_sends_a_few_calls_together_after_max_linger(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(batch_min_calls=50, max_linger_ms=400)  # wakes every 5 ms
    for i in range(3):
        pulse.record(**_good(i))
    time.sleep(0.15)  # thirty wakes: too few calls, and the oldest has not waited 400 ms
    assert _handover(pulse).calls == 0
    _wait_until(lambda: _handover(pulse).calls == 3)
    assert _handover(pulse).records == 1  # one record of three, not three of one


def test_enough_calls_or_a_flush_send_at_once(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(batch_min_calls=5, max_linger_ms=60_000)
    for i in range(5):
        pulse.record(**_good(i))
    _wait_until(lambda: _handover(pulse).calls == 5)  # five waiting: sent at the next wake, not in a minute
    for i in range(2):
        pulse.record(**_good(i))
    time.sleep(0.1)
    assert _handover(pulse).calls == 5  # two wait for more
    pulse.flush(timeout=0.2)  # the broker is down: delivery cannot finish, but the two are handed over
    assert _handover(pulse).calls == 7 and _handover(pulse).records == 2


def test_garbage_calls_are_counted_as_encoding_drops(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse()
    for fields in ({"input_tokens": "many"}, {"status": "weird"}, {"prompt_text": 123}, {"service": ["x"]}):
        pulse.record(**{**_good(0), **fields})
    _wait_until(lambda: pulse.stats().dropped_encoding == 4)
    stats = pulse.stats()
    assert (stats.recorded, stats.pending, stats.delivered) == (4, 0, 0)


def test_buffer_bound_drops_beyond_the_cap(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(max_buffered_calls=100, batch_max_calls=10)
    accepted = [pulse.record(**_good(i)) for i in range(150)]
    assert accepted.count(True) == 100
    assert accepted[100:] == [False] * 50
    _wait_until(_drained(pulse))
    stats = pulse.stats()
    assert (stats.recorded, stats.dropped_buffer_full, stats.pending, stats.delivered) == (100, 50, 100, 0)
    # Undelivered calls stay counted against the bound: the broker is down, so the next call is refused too.
    assert pulse.record(**_good(151)) is False
    assert pulse.stats().dropped_buffer_full == 51


@pytest.mark.parametrize(
    "bad",
    [
        {"input_tokens": "many"},  # fails in the packer
        {"status": "weird"},  # not a CallStatus symbol
        {"prompt_text": 123},  # fails while the SDK measures and hashes the text
        {"service": ["a", "list"]},  # cannot even be grouped by service
        {"user_hash": 42},  # fails in the Avro writer
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_a_bad_call_does_not_cost_its_batch_mates(make_pulse: Callable[..., Pulse], bad: dict[str, Any]) -> None:
    pulse = make_pulse(batch_max_calls=6, linger_ms=60_000)  # woken by the 6th call: one batch of six
    for i in range(6):
        pulse.record(**{**_good(i), **(bad if i == 2 else {})})
    _wait_until(_drained(pulse))
    stats = pulse.stats()
    assert (stats.dropped_encoding, stats.pending, stats.dropped_delivery_failed) == (1, 5, 0)
    assert _handover(pulse).calls == 5


def test_a_batch_too_large_for_one_record_is_split(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(capture_text=True, redact_pii=False, max_text_chars=200_000, batch_max_calls=30,
                       linger_ms=60_000)
    for i in range(30):
        pulse.record(**_good(i), prompt_text="x" * 100_000)  # ~3 MB of text in one micro-batch
    _wait_until(_drained(pulse))
    stats = pulse.stats()
    assert (stats.pending, stats.dropped_encoding, stats.dropped_delivery_failed) == (30, 0, 0)
    assert _handover(pulse).calls == 30
    assert _handover(pulse).records >= 4  # at least ceil(3 MB / 1 MB) records queued for the broker


def test_a_single_call_larger_than_a_record_is_dropped_and_counted(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(capture_text=True, redact_pii=False, max_text_chars=2 * ONE_MEBIBYTE, batch_max_calls=3,
                       linger_ms=60_000)
    pulse.record(**_good(0))
    pulse.record(**_good(1), prompt_text="y" * (2 * ONE_MEBIBYTE))
    pulse.record(**_good(2))
    _wait_until(lambda: pulse.stats().dropped_delivery_failed == 1)
    _wait_until(_drained(pulse))
    assert pulse.stats().pending == 2
    assert _handover(pulse).calls == 2


def test_close_with_a_short_timeout_returns_promptly_and_warns(
    make_pulse: Callable[..., Pulse], caplog: pytest.LogCaptureFixture
) -> None:
    pulse = make_pulse()
    for i in range(3):
        pulse.record(**_good(i))
    caplog.set_level(logging.WARNING, logger="llmpulse.sdk")
    start = time.monotonic()
    pulse.close(timeout=0.2)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, f"close took {elapsed:.2f}s"
    assert "3 calls were not delivered before shutdown" in caplog.text
    assert not pulse._thread.is_alive()
    pulse.close(timeout=0.2)  # a second close is a no-op
    assert caplog.text.count("not delivered before shutdown") == 1


def test_flush_reports_what_is_still_pending(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse()
    pulse.record(**_good(0))
    pulse.record(**_good(1))
    start = time.monotonic()
    assert pulse.flush(timeout=0.2) == 2
    assert time.monotonic() - start < 1.0


def test_service_from_the_environment_wins_over_detection(
    make_pulse: Callable[..., Pulse], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMPULSE_SERVICE", "billing-api")
    assert make_pulse(service="").settings.service == "billing-api"
    assert make_pulse(service="explicit").settings.service == "explicit"  # an explicit name wins over both


def test_service_defaults_to_the_callers_package(
    make_pulse: Callable[..., Pulse], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMPULSE_SERVICE", raising=False)
    assert make_pulse(service="").settings.service == __name__.split(".")[0]
    namespace: dict[str, Any] = {"__name__": "billing.handlers.chat", "detect_service": detect_service}
    exec("found = detect_service()", namespace)
    assert namespace["found"] == "billing"


PROMPT = "Write to jane.doe@example.com about order 42"


def _completed(pulse: Pulse, **fields: Any) -> dict[str, Any]:
    row = {**_good(0), "prompt_text": PROMPT, "response_text": "Sure, mailing jane.doe@example.com", **fields}
    pulse._complete("checkout", row)
    return row


def test_text_is_not_sent_by_default_but_measured_and_hashed(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse(capture_text=False)
    row = _completed(pulse)
    assert row["prompt_text"] is None and row["response_text"] is None
    assert row["prompt_chars"] == len(PROMPT)
    assert row["response_chars"] == len("Sure, mailing jane.doe@example.com")
    assert row["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert "response_sha256" not in row
    assert (row["service"], row["status"], len(row["event_id"])) == ("checkout", "ok", 32)
    batch = pulse._encoder.columns([row])
    assert batch["prompt_text"] is None and batch["response_text"] is None


def test_captured_text_is_redacted(make_pulse: Callable[..., Pulse]) -> None:
    row = _completed(make_pulse(capture_text=True))
    assert row["prompt_text"] == "Write to [REDACTED_EMAIL] about order 42"
    assert row["response_text"] == "Sure, mailing [REDACTED_EMAIL]"
    assert row["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()  # hash of what the user sent


def test_redaction_can_be_turned_off(make_pulse: Callable[..., Pulse]) -> None:
    row = _completed(make_pulse(capture_text=True, redact_pii=False))
    assert row["prompt_text"] == PROMPT


def test_captured_text_is_truncated_but_its_length_is_not(make_pulse: Callable[..., Pulse]) -> None:
    row = _completed(make_pulse(capture_text=True, max_text_chars=10), prompt_text="a" * 50)
    assert row["prompt_text"] == "a" * 10
    assert row["prompt_chars"] == 50


def test_what_is_queued_decodes_to_what_was_recorded(make_pulse: Callable[..., Pulse]) -> None:
    pulse = make_pulse()
    pulse.record(**_good(3), status="rate_limited", error_type="RateLimitError", labels={"team": "pay"})
    row = pulse._queue[0]
    assert abs(row["timestamp_ms"] - time.time() * 1000) < 5_000
    pulse._complete("checkout", row)
    decoder = CallDecoder(Limits(), max_record_bytes=ONE_MEBIBYTE, max_calls_per_batch=10)
    calls, refused = decoder.decode(pulse._encoder.encode_batch([row]), int(time.time() * 1000))
    assert refused == [] and calls is not None
    assert calls.status.tolist() == [3]
    assert calls.error_type.tolist() == ["RateLimitError"]
    assert calls.labels == [{"team": "pay"}]
    assert calls.service.tolist() == ["checkout"]
