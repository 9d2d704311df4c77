"""Retries in the example service: backoff that grows, only for passing failures, and one llm_call per attempt
labelled with its number (the instrumented client records each attempt)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
import httpx
import openai
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from examples.llm_service.app import Service, ServiceConfig, create_app
from examples.llm_service.retries import RetryPolicy, retry_after_s, retryable
from tests.support.recording import RecordingPulse
from tests.support.scripted_llm import ScriptedLLM, Sleeps, completion, failure, sample

REQUEST = httpx.Request("POST", "https://llm.invalid/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers, request=REQUEST)
    return openai.OpenAI(api_key="x", base_url="https://llm.invalid/v1")._make_status_error("boom", body=None,
                                                                                             response=response)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.5, max_delay_s=3.0, jitter=0.0)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_shortens_but_the_backoff_still_grows() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=100.0, jitter=0.2)
    assert policy.delay_s(1, rand=lambda: 0.0) == 1.0
    assert policy.delay_s(1, rand=lambda: 0.999) == pytest.approx(0.8, abs=1e-3)
    worst_second, best_first = policy.delay_s(2, rand=lambda: 0.999), policy.delay_s(1, rand=lambda: 0.0)
    assert worst_second > best_first


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=8.0, jitter=0.0)
    assert policy.delay_s(1, retry_after_s=3.0) == 3.0
    assert policy.delay_s(1, retry_after_s=60.0) == 8.0
    assert policy.delay_s(3, retry_after_s=0.0) == 2.0
    assert retry_after_s(status_error(429, {"retry-after": "2"})) == 2.0
    assert retry_after_s(status_error(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    assert retry_after_s(status_error(500)) is None


@pytest.mark.parametrize(("status", "expected"), [(429, True), (500, True), (503, True), (408, True),
                                                  (400, False), (401, False), (404, False), (422, False)])
def test_which_failures_are_retried(status: int, expected: bool) -> None:
    assert retryable(status_error(status)) is expected


def test_connection_failures_and_timeouts_are_retried() -> None:
    assert retryable(openai.APIConnectionError(request=REQUEST))
    assert retryable(openai.APITimeoutError(request=REQUEST))
    assert not retryable(ValueError("not an API error"))


def test_invalid_policies_are_refused() -> None:
    for bad in ({"max_attempts": 0}, {"multiplier": 0.5}, {"jitter": 1.0}, {"base_delay_s": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def service_for(llm: ScriptedLLM, pulse: RecordingPulse, sleeps: Sleeps, **policy: float) -> Service:
    config = ServiceConfig(models=("gpt-4o",), retry=RetryPolicy(**{"jitter": 0.0, **policy}))
    return Service(config, pulse, CollectorRegistry(), http_client=llm.http_client(), sleep=sleeps)


def test_one_llm_call_per_attempt_with_its_number(pulse: RecordingPulse, sleeps: Sleeps) -> None:
    llm = ScriptedLLM(failure(500), failure(503), completion("third time lucky"))
    service = service_for(llm, pulse, sleeps, max_attempts=3, base_delay_s=0.25)

    result = asyncio.run(service.ask("Why is the API slow?"))

    assert result["answer"] == "third time lucky" and len(llm.bodies) == 3
    assert [c["labels"]["attempt"] for c in pulse.calls] == ["1", "2", "3"]
    assert [c.get("status", "ok") for c in pulse.calls] == ["error", "error", "ok"]
    assert [c.get("error_type") for c in pulse.calls] == ["InternalServerError:500", "InternalServerError:503", None]
    assert sleeps.delays == [0.25, 0.5]  # growing
    attempts = service.metrics.attempts
    assert sample(attempts, "_total", model="gpt-4o", outcome="retried") == 2
    assert sample(attempts, "_total", model="gpt-4o", outcome="ok") == 1


def test_a_refused_request_is_not_retried(pulse: RecordingPulse, sleeps: Sleeps) -> None:
    llm = ScriptedLLM(failure(400))
    service = service_for(llm, pulse, sleeps)
    with pytest.raises(openai.BadRequestError):
        asyncio.run(service.ask("?"))
    assert len(pulse.calls) == 1 and pulse.calls[0]["labels"]["attempt"] == "1" and sleeps.delays == []
    assert sample(service.metrics.attempts, "_total", model="gpt-4o", outcome="failed") == 1


def test_rate_limits_wait_as_long_as_the_provider_asks(pulse: RecordingPulse, sleeps: Sleeps) -> None:
    llm = ScriptedLLM(failure(429, {"retry-after": "4"}), completion())
    service = service_for(llm, pulse, sleeps, base_delay_s=0.5)
    asyncio.run(service.ask("?"))
    assert sleeps.delays == [4.0]
    assert [c.get("status", "ok") for c in pulse.calls] == ["rate_limited", "ok"]


def test_every_attempt_of_a_request_carries_its_ids_and_exhausted_retries_answer_502(
        pulse: RecordingPulse, sleeps: Sleeps) -> None:
    llm = ScriptedLLM(failure(500), failure(500), failure(500))
    config = ServiceConfig(models=("gpt-4o",), retry=RetryPolicy(max_attempts=3, jitter=0.0))
    app = create_app(config, pulse=pulse, http_client=llm.http_client(), sleep=sleeps)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(app) as http:
        answer = http.post("/ask", json={"question": "?"},
                           headers={"X-Request-ID": "req-42", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert answer.status_code == 502 and answer.headers["X-Request-ID"] == "req-42"
    assert [c["labels"] for c in pulse.calls] == [{"request_id": "req-42", "attempt": str(n)} for n in (1, 2, 3)]
    assert {c["trace_id"] for c in pulse.calls} == {trace_id}
    assert len({c["span_id"] for c in pulse.calls}) == 1 and pulse.calls[0]["span_id"] != "00f067aa0ba902b7"
    assert sleeps.delays == [0.5, 1.0]
