"""track(): timing, outcome classification, and an exception that reaches the caller untouched."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from llmpulse.producers import tracking
from llmpulse.producers.client import Pulse
from llmpulse.producers.tracking import CallTracker, classify_error
from tests.support.clock import FakeClock


class _Recorder:
    """Stands in for Pulse: keeps what record() was given."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def record(self, **fields: Any) -> bool:
        if self.fail:
            raise RuntimeError("telemetry broke")
        self.calls.append(fields)
        return True

    track = Pulse.track  # the real method: it only builds a CallTracker around self


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock the tracker reads its start, first token and end from."""
    fake = FakeClock(start=1_000.0)
    monkeypatch.setattr(tracking, "time", SimpleNamespace(perf_counter=fake))
    return fake


def test_successful_call_is_timed_and_recorded(clock: FakeClock) -> None:
    pulse = _Recorder()
    with pulse.track("openai", "gpt-4o", feature="faq") as call:
        clock.advance(0.05)
        call.set_usage(120, 30, cached_tokens=100)
        call.set(response_model="gpt-4o-2024-08-06", confidence=0.8)
    (fields,) = pulse.calls
    assert fields["latency_ms"] == pytest.approx(50.0)
    assert fields["provider"] == "openai"
    assert fields["request_model"] == "gpt-4o"
    assert fields["feature"] == "faq"
    assert (fields["input_tokens"], fields["output_tokens"], fields["cached_tokens"]) == (120, 30, 100)
    assert fields["response_model"] == "gpt-4o-2024-08-06"
    assert "status" not in fields  # the SDK fills "ok" when it completes the call
    assert "ttft_ms" not in fields


def test_time_to_first_token_is_the_first_mark_only(clock: FakeClock) -> None:
    pulse = _Recorder()
    with pulse.track("anthropic", "claude") as call:
        clock.advance(0.03)
        call.first_token()
        clock.advance(0.03)
        call.first_token()  # later chunks do not move it
    (fields,) = pulse.calls
    assert fields["ttft_ms"] == pytest.approx(30.0)
    assert fields["latency_ms"] == pytest.approx(60.0)


class RateLimitError(Exception):
    pass


def test_exception_is_recorded_and_reraised_as_the_same_object(clock: FakeClock) -> None:
    pulse = _Recorder()
    raised = RateLimitError("slow down")
    with pytest.raises(RateLimitError) as caught, pulse.track("openai", "gpt-4o"):
        clock.advance(0.01)
        raise raised
    assert caught.value is raised
    assert caught.value.__traceback__ is not None
    (fields,) = pulse.calls
    assert (fields["status"], fields["error_type"]) == ("rate_limited", "RateLimitError")
    assert fields["latency_ms"] == pytest.approx(10.0)


def test_status_set_by_the_caller_is_kept_on_error() -> None:
    pulse = _Recorder()
    with pytest.raises(ValueError), pulse.track("openai", "gpt-4o") as call:
        call.set(status="filtered", error_type="guard")
        raise ValueError("blocked")
    assert (pulse.calls[0]["status"], pulse.calls[0]["error_type"]) == ("filtered", "guard")


def test_broken_telemetry_changes_neither_result_nor_exception() -> None:
    pulse = _Recorder(fail=True)
    with pulse.track("openai", "gpt-4o"):
        result = 42
    assert result == 42
    original = KeyError("caller's own")
    with pytest.raises(KeyError) as caught, CallTracker(pulse, provider="openai"):  # type: ignore[arg-type]
        raise original
    assert caught.value is original


def test_base_exceptions_pass_through_too() -> None:
    pulse = _Recorder()
    with pytest.raises(KeyboardInterrupt), pulse.track("openai", "gpt-4o"):
        raise KeyboardInterrupt
    assert pulse.calls[0]["status"] == "error"


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class APIStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.response = _Response(status_code)


class APITimeoutError(Exception):
    pass


class ContentFilterError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RateLimitError("x"), ("rate_limited", "RateLimitError")),
        (APITimeoutError("x"), ("timeout", "APITimeoutError")),
        (TimeoutError(), ("timeout", "TimeoutError")),
        (APIStatusError(429), ("rate_limited", "APIStatusError")),
        (APIStatusError(504), ("timeout", "APIStatusError")),
        (APIStatusError(408), ("timeout", "APIStatusError")),
        (APIStatusError(500), ("error", "APIStatusError:500")),
        (HTTPError(429), ("rate_limited", "HTTPError")),
        (HTTPError(503), ("error", "HTTPError:503")),
        (ContentFilterError(), ("filtered", "ContentFilterError")),
        (ValueError("x"), ("error", "ValueError")),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value[0],
)
def test_classify_error(exc: BaseException, expected: tuple[str, str]) -> None:
    assert classify_error(exc) == expected
