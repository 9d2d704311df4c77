"""instrument_openai with the real openai client against the local fake API."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from llmpulse.producers import Pulse  # noqa: E402
from llmpulse.producers.instrumentation import instrument_openai, is_instrumented, uninstrument  # noqa: E402

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
STREAM_USAGE = {"include_usage": True}


def ttft_floor(api: Any) -> float:
    """Milliseconds the fake holds back a stream's first content chunk (less 10 % for timer slack)."""
    return api.server.first_token_delay * 1000 * 0.9


def clients(api: Any, cls: type = openai.OpenAI, **options: Any) -> tuple[Any, Any]:
    """A plain client (the baseline) and an identical one to instrument."""
    options = {"base_url": api.openai_base_url, "api_key": "test", "max_retries": 0, **options}
    return cls(**options), cls(**options)


def test_chat_result_is_unchanged_and_recorded(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api)
    instrument_openai(client, pulse=recorder)
    expected = plain.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    got = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert type(got) is type(expected)
    assert got.model_dump() == expected.model_dump()
    call = recorder.only()
    assert call["provider"] == "openai" and call["operation"] == "chat"
    assert call["request_model"] == "gpt-4o" and call["response_model"] == "gpt-4o-2024"
    # 4 prompt words (2 of them the cached system prompt), 3 reply words "echo: hi there"
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (4, 3, 2)
    assert "status" not in call and "ttft_ms" not in call  # Pulse fills status "ok"; no stream, no ttft
    assert 0 < call["latency_ms"] < 5_000
    assert "prompt_text" not in call and "response_text" not in call


def test_stream_with_usage_records_tokens_and_ttft(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api)
    instrument_openai(client, pulse=recorder)
    expected = [c.model_dump() for c in plain.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options=STREAM_USAGE)]
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                            stream_options=STREAM_USAGE)
    assert isinstance(stream, openai.Stream)
    assert recorder.calls == []  # recorded when the stream ends, not when it starts
    got = [chunk.model_dump() for chunk in stream]
    assert got == expected
    call = recorder.only()
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (4, 3, 2)
    assert call["response_model"] == "gpt-4o-2024"
    # The role-only chunk comes at once; the first content waits FIRST_TOKEN_DELAY on the server.
    assert call["ttft_ms"] >= ttft_floor(fake_api)
    assert call["latency_ms"] >= call["ttft_ms"]


def test_stream_without_usage_option_records_zero_tokens(fake_api: Any, recorder: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=recorder)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True) if c.choices)
    assert text == "echo: hi there"
    call = recorder.only()
    assert "input_tokens" not in call and call["ttft_ms"] > 0  # the API sent no usage to record


def test_stream_closed_early_in_with_block_records_once(fake_api: Any, recorder: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=recorder)
    with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
    assert stream.response.is_closed
    del stream
    gc.collect()
    call = recorder.only()
    assert call["provider"] == "openai" and "ttft_ms" not in call  # closed before any content arrived


def test_abandoned_stream_is_recorded_when_collected(fake_api: Any, recorder: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=recorder)
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    next(stream)
    del stream
    gc.collect()
    assert len(recorder.calls) == 1


def test_async_chat_and_stream(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api, openai.AsyncOpenAI)
    instrument_openai(client, pulse=recorder)

    async def run() -> tuple[Any, Any, list[Any], list[Any]]:
        expected = await plain.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        got = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        plain_chunks = [c async for c in await plain.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options=STREAM_USAGE)]
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options=STREAM_USAGE)
        assert isinstance(stream, openai.AsyncStream)
        async with stream:
            chunks = [c async for c in stream]
        return expected, got, plain_chunks, chunks

    expected, got, plain_chunks, chunks = asyncio.run(run())
    assert got.model_dump() == expected.model_dump()
    assert [c.model_dump() for c in chunks] == [c.model_dump() for c in plain_chunks]
    plain_call, stream_call = recorder.calls
    for call in (plain_call, stream_call):
        assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (4, 3, 2)
    assert "ttft_ms" not in plain_call and stream_call["ttft_ms"] >= ttft_floor(fake_api)


def test_embeddings(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api)
    instrument_openai(client, pulse=recorder)
    got = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert got.model_dump() == plain.embeddings.create(model="text-embedding-3-small",
                                                       input=["one two", "three"]).model_dump()
    call = recorder.only()
    assert call["operation"] == "embeddings" and call["response_model"] == "text-embedding-3-small-v1"
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (3, 0, 0)


def test_responses_api(fake_api: Any, capturing_recorder: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=capturing_recorder)
    if not hasattr(client, "responses"):
        pytest.skip("this openai version has no Responses API (instrumentation skips the endpoint)")
    got = client.responses.create(model="gpt-4o", input="hello you")
    assert got.output_text == "echo: hello you"
    call = capturing_recorder.only()
    assert (call["input_tokens"], call["output_tokens"]) == (2, 3)
    assert call["prompt_text"] == "hello you" and call["response_text"] == "echo: hello you"


@pytest.mark.parametrize(
    ("model", "error", "status", "error_type"),
    [
        ("gpt-status-429", openai.RateLimitError, "rate_limited", "RateLimitError"),
        ("gpt-status-500", openai.InternalServerError, "error", "InternalServerError:500"),
        ("gpt-status-400", openai.BadRequestError, "error", "BadRequestError:400"),
    ],
)
def test_http_errors_propagate_and_are_classified(
    fake_api: Any, recorder: Any, model: str, error: type, status: str, error_type: str
) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=recorder)
    with pytest.raises(error) as raised:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert type(raised.value) is error
    call = recorder.only()
    assert (call["status"], call["error_type"], call["request_model"]) == (status, error_type, model)


def test_timeout_propagates_and_is_classified(fake_api: Any, recorder: Any) -> None:
    client = instrument_openai(clients(fake_api, timeout=0.3)[1], pulse=recorder)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-slow", messages=MESSAGES)
    call = recorder.only()
    assert (call["status"], call["error_type"]) == ("timeout", "APITimeoutError")
    assert 250 < call["latency_ms"] < 1_500


def test_error_in_the_middle_of_a_stream(fake_api: Any, recorder: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=recorder)
    received = []
    with pytest.raises(openai.APIError, match="fake mid-stream failure"):
        for chunk in client.chat.completions.create(model="gpt-stream-error", messages=MESSAGES, stream=True):
            received.append(chunk)
    assert len(received) == 2  # the role chunk and the first word reached the caller
    call = recorder.only()
    assert (call["status"], call["error_type"]) == ("error", "APIError")
    assert call["ttft_ms"] >= ttft_floor(fake_api)


def test_text_is_passed_only_when_the_pulse_captures_it(fake_api: Any, capturing_recorder: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=capturing_recorder)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    for call in capturing_recorder.calls:
        assert call["prompt_text"] == "be brief\nhi there"
        assert call["response_text"] == "echo: hi there"


class BrokenPulse:
    settings = None

    def record(self, **fields: Any) -> bool:
        raise RuntimeError("telemetry is down")


def test_a_broken_recorder_never_reaches_the_caller(fake_api: Any) -> None:
    client = instrument_openai(clients(fake_api)[1], pulse=BrokenPulse())
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hi there"
    assert len(list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))) == 5
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-status-429", messages=MESSAGES)


def test_uninstrument_restores_the_client(fake_api: Any, recorder: Any) -> None:
    client = clients(fake_api)[1]
    class_method = type(client.chat.completions).create
    instrument_openai(client, pulse=recorder, feature="search")
    instrument_openai(client, pulse=recorder, feature="search")  # twice: re-targets, never stacks
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert recorder.only()["feature"] == "search"
    assert is_instrumented(client)
    assert uninstrument(client) is client and not is_instrumented(client)
    assert client.chat.completions.create.__func__ is class_method
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(recorder.calls) == 1


def test_wrong_client_type_is_refused(recorder: Any) -> None:
    with pytest.raises(TypeError, match="openai endpoints"):
        instrument_openai(object(), pulse=recorder)


def test_importing_llmpulse_does_not_import_the_sdks() -> None:
    code = ("import sys, llmpulse.producers, llmpulse.producers.instrumentation; "
            "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch, recorder: Any) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # what an environment without the package looks like
    with pytest.raises(ImportError, match=r"llmpulse\[instrument\]"):
        instrument_openai(object(), pulse=recorder)


def test_real_pulse_delivers_to_kafka(fake_api: Any, topic_factory: Any, kafka_bootstrap: str,
                                      read_calls: Any) -> None:
    topic = topic_factory("instr-openai", 1)
    with Pulse(bootstrap_servers=kafka_bootstrap, topic=topic, service="svc-openai", linger_ms=10) as pulse:
        client = instrument_openai(clients(fake_api)[1], pulse=pulse, feature="faq")
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                            stream_options=STREAM_USAGE))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-status-429", messages=MESSAGES)
        assert pulse.flush(10) == 0
    plain, streamed, limited = read_calls(topic, 3)
    for row in (plain, streamed, limited):
        assert (row["service"], row["provider"], row["feature"]) == ("svc-openai", "openai", "faq")
    assert [row["model"] for row in (plain, streamed, limited)] == ["gpt-4o", "gpt-4o", "gpt-status-429"]
    assert [row["status"] for row in (plain, streamed, limited)] == [0, 0, 3]  # ok, ok, rate_limited
    assert limited["error_type"] == "RateLimitError"
    for row in (plain, streamed):
        assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (4, 3, 2)
    assert streamed["ttft_ms"] >= ttft_floor(fake_api) and plain["ttft_ms"] != plain["ttft_ms"]  # NaN: no stream


def test_example_service_fails_over_and_records(fake_api: Any, recorder: Any) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from examples.llm_service.app import ServiceConfig, create_app
    from examples.llm_service.retries import RetryPolicy

    config = ServiceConfig(base_url=fake_api.openai_base_url, models=("gpt-status-500", "gpt-4o"),
                           retry=RetryPolicy(max_attempts=3, base_delay_s=0.0))
    with TestClient(create_app(config, pulse=recorder)) as http:
        codes = [http.post("/ask", json={"question": f"q{i}"}).status_code for i in range(6)]
        # q0 fails on all three attempts; q1's second failure is the fifth, which opens the local breaker, and its
        # third attempt goes to gpt-4o
        assert codes == [502] + [200] * 5
        ready = http.get("/health/ready").json()
        assert ready["circuits"]["openai/gpt-status-500"]["state"] == "OPEN" and ready["ready"]
        assert http.post("/ask", json={"question": "q5"}).json()["cached"] is True
        assert 'ai_circuit_open{model="gpt-status-500"} 1.0' in http.get("/metrics").text
        assert http.get("/cost").json()["total_spend_usd"] > 0
    statuses = [(c["request_model"], c.get("status", "ok"), c.get("cache_hit", False)) for c in recorder.calls]
    failed, answered, cached = ("gpt-status-500", "error", False), ("gpt-4o", "ok", False), ("gpt-4o", "ok", True)
    assert statuses == [failed] * 5 + [answered] * 5 + [cached]
    assert [c["labels"]["attempt"] for c in recorder.calls[:6]] == ["1", "2", "3", "1", "2", "3"]  # one per attempt
    assert {c["feature"] for c in recorder.calls if not c.get("cache_hit")} == {"ask"}
