"""instrument_anthropic with the real anthropic client against the local fake API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from llmpulse.producers import Pulse  # noqa: E402
from llmpulse.producers.instrumentation import instrument_anthropic, uninstrument  # noqa: E402

MESSAGES = [{"role": "user", "content": "hi there"}]
# The fake reports a plain-string system prompt as a cache read and a cache_control block as a cache write.
SYSTEM_READ = "be very brief"  # 3 words read from the cache
SYSTEM_BLOCKS = [{"type": "text", "text": "long cached context", "cache_control": {"type": "ephemeral"}},
                 {"type": "text", "text": "and more"}]  # 3 words written to the cache, 2 read


def ttft_floor(api: Any) -> float:
    return api.server.first_token_delay * 1000 * 0.9


def clients(api: Any, cls: type = anthropic.Anthropic, **options: Any) -> tuple[Any, Any]:
    options = {"base_url": api.anthropic_base_url, "api_key": "test", "max_retries": 0, **options}
    return cls(**options), cls(**options)


def create(client: Any, model: str = "claude-x", **kwargs: Any) -> Any:
    return client.messages.create(model=model, max_tokens=64, messages=MESSAGES, **kwargs)


def test_message_is_unchanged_and_input_includes_cache_reads(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api)
    instrument_anthropic(client, pulse=recorder)
    expected = create(plain, system=SYSTEM_READ)
    got = create(client, system=SYSTEM_READ)
    assert got.model_dump() == expected.model_dump()
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens) == (2, 3)  # Anthropic's own split
    call = recorder.only()
    assert (call["provider"], call["operation"]) == ("anthropic", "chat")
    assert (call["request_model"], call["response_model"]) == ("claude-x", "claude-x-2024")
    # input = 2 uncached + 3 cache reads + 0 cache writes; cached = the reads; output "echo: hi there"
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (5, 3, 3)
    assert "ttft_ms" not in call and call["latency_ms"] > 0


def test_cache_writes_count_as_input_but_not_as_cached(fake_api: Any, recorder: Any) -> None:
    client = instrument_anthropic(clients(fake_api)[1], pulse=recorder)
    create(client, system=SYSTEM_BLOCKS)
    call = recorder.only()
    assert (call["input_tokens"], call["cached_tokens"]) == (2 + 2 + 3, 2)


def test_raw_event_stream(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api)
    instrument_anthropic(client, pulse=recorder)
    expected = [event.model_dump() for event in create(plain, system=SYSTEM_BLOCKS, stream=True)]
    stream = create(client, system=SYSTEM_BLOCKS, stream=True)
    assert isinstance(stream, anthropic.Stream) and recorder.calls == []
    events = [event.model_dump() for event in stream]
    assert events == expected
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    call = recorder.only()
    # usage from message_start, output tokens from the cumulative message_delta (3), not message_start's 1
    assert (call["input_tokens"], call["output_tokens"], call["cached_tokens"]) == (7, 3, 2)
    assert call["response_model"] == "claude-x-2024"
    assert call["ttft_ms"] >= ttft_floor(fake_api) and call["latency_ms"] >= call["ttft_ms"]


def test_stream_helper_keeps_text_stream_and_final_message(fake_api: Any, capturing_recorder: Any) -> None:
    plain, client = clients(fake_api)
    instrument_anthropic(client, pulse=capturing_recorder)
    with plain.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as stream:
        expected = stream.get_final_message()
    with client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hi there"
    assert final.model_dump() == expected.model_dump()
    call = capturing_recorder.only()
    assert (call["input_tokens"], call["output_tokens"]) == (2, 3)
    assert call["ttft_ms"] >= ttft_floor(fake_api)
    assert (call["prompt_text"], call["response_text"]) == ("hi there", "echo: hi there")


def test_async_create_stream_and_helper(fake_api: Any, recorder: Any) -> None:
    plain, client = clients(fake_api, anthropic.AsyncAnthropic)
    instrument_anthropic(client, pulse=recorder)

    async def run() -> tuple[Any, Any, list[Any], list[Any], str]:
        expected = await create(plain, system=SYSTEM_READ)
        got = await create(client, system=SYSTEM_READ)
        plain_events = [e async for e in await create(plain, stream=True)]
        stream = await create(client, stream=True)
        assert isinstance(stream, anthropic.AsyncStream)
        events = [e async for e in stream]
        async with client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as helper:
            text = await helper.get_final_text()
        return expected, got, plain_events, events, text

    expected, got, plain_events, events, text = asyncio.run(run())
    assert got.model_dump() == expected.model_dump()
    assert [e.model_dump() for e in events] == [e.model_dump() for e in plain_events]
    assert text == "echo: hi there"
    plain_call, stream_call, helper_call = recorder.calls
    assert (plain_call["input_tokens"], plain_call["cached_tokens"]) == (5, 3)
    for call in (stream_call, helper_call):
        assert (call["input_tokens"], call["output_tokens"]) == (2, 3)
        assert call["ttft_ms"] >= ttft_floor(fake_api)


@pytest.mark.parametrize(
    ("model", "error", "status", "error_type"),
    [
        ("claude-status-429", anthropic.RateLimitError, "rate_limited", "RateLimitError"),
        ("claude-status-500", anthropic.InternalServerError, "error", "InternalServerError:500"),
        ("claude-status-529", anthropic.APIStatusError, "error", None),  # OverloadedError in newer SDKs
    ],
)
def test_http_errors_propagate_and_are_classified(
    fake_api: Any, recorder: Any, model: str, error: type, status: str, error_type: str
) -> None:
    client = instrument_anthropic(clients(fake_api)[1], pulse=recorder)
    with pytest.raises(error) as raised:
        create(client, model=model)
    plain = clients(fake_api)[0]
    with pytest.raises(error) as baseline:
        create(plain, model=model)
    assert type(raised.value) is type(baseline.value)
    call = recorder.only()
    expected_type = error_type or f"{type(baseline.value).__name__}:529"
    assert (call["status"], call["error_type"]) == (status, expected_type)


def test_timeout_and_errors_from_the_stream_helper(fake_api: Any, recorder: Any) -> None:
    client = instrument_anthropic(clients(fake_api, timeout=0.3)[1], pulse=recorder)
    with pytest.raises(anthropic.APITimeoutError):
        create(client, model="claude-slow")
    with pytest.raises(anthropic.RateLimitError), client.messages.stream(
        model="claude-status-429", max_tokens=64, messages=MESSAGES
    ) as stream:
        stream.get_final_message()
    timeout, limited = recorder.calls
    assert (timeout["status"], timeout["error_type"]) == ("timeout", "APITimeoutError")
    assert (limited["status"], limited["error_type"]) == ("rate_limited", "RateLimitError")


def test_error_event_in_the_middle_of_a_stream(fake_api: Any, recorder: Any) -> None:
    client = instrument_anthropic(clients(fake_api)[1], pulse=recorder)
    seen = []
    with pytest.raises(anthropic.APIStatusError):
        for event in create(client, model="claude-stream-error", stream=True):
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    call = recorder.only()
    assert call["status"] == "error" and call["input_tokens"] == 2 and call["ttft_ms"] > 0


def test_uninstrument(fake_api: Any, recorder: Any) -> None:
    client = instrument_anthropic(clients(fake_api)[1], pulse=recorder)
    uninstrument(client)
    create(client)
    with client.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as stream:
        stream.until_done()
    assert recorder.calls == []


def test_real_pulse_delivers_to_kafka(fake_api: Any, topic_factory: Any, kafka_bootstrap: str,
                                      read_calls: Any) -> None:
    topic = topic_factory("instr-anthropic", 1)
    with Pulse(bootstrap_servers=kafka_bootstrap, topic=topic, service="svc-claude", linger_ms=10) as pulse:
        client = instrument_anthropic(clients(fake_api)[1], pulse=pulse)
        create(client, system=SYSTEM_READ)
        list(create(client, system=SYSTEM_BLOCKS, stream=True))
        with pytest.raises(anthropic.InternalServerError):
            create(client, model="claude-status-500")
        assert pulse.flush(10) == 0
    plain, streamed, failed = read_calls(topic, 3)
    assert {row["provider"] for row in (plain, streamed, failed)} == {"anthropic"}
    assert (plain["input_tokens"], plain["output_tokens"], plain["cached_tokens"]) == (5, 3, 3)
    assert (streamed["input_tokens"], streamed["cached_tokens"]) == (7, 2)
    assert streamed["ttft_ms"] >= ttft_floor(fake_api)
    assert (failed["status"], failed["error_type"], failed["model"]) == (1, "InternalServerError:500",
                                                                         "claude-status-500")
