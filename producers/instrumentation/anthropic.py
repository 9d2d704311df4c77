"""``instrument_anthropic(client, pulse=pulse)``: record every Anthropic call of one client, changing nothing else.

Covered (sync ``Anthropic`` and async ``AsyncAnthropic``): ``messages.create`` plain and ``stream=True``
(usage from ``message_start``, output tokens from ``message_delta``), and the ``messages.stream(...)`` helper
(its ``text_stream``, ``get_final_message()`` and event iteration all keep working).

Token convention: Anthropic's ``input_tokens`` *excludes* prompt-cache reads and writes, OpenAI's
``prompt_tokens`` includes them. llmpulse follows OpenAI so one dashboard can compare providers:

    input_tokens  = input_tokens + cache_read_input_tokens + cache_creation_input_tokens
    cached_tokens = cache_read_input_tokens
"""

from __future__ import annotations

from typing import Any

from llmpulse.producers.instrumentation.common import (
    Endpoint,
    Proxy,
    Reader,
    Recorder,
    Target,
    count,
    dont_throw,
    fail,
    finish,
    instrument_client,
    require,
    start,
    text_of,
)

PROVIDER = "anthropic"  # gen_ai.provider.name


_INPUT_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class MessagesReader(Reader):
    __slots__ = ("_input",)

    def __init__(self) -> None:
        super().__init__()
        self._input = [0, 0, 0]  # Anthropic's own figures: uncached input, cache reads, cache writes

    def prompt(self, kwargs: dict[str, Any]) -> str | None:
        parts = [text_of(kwargs.get("system"))]
        for message in kwargs.get("messages") or ():
            if isinstance(message, dict):
                parts.append(text_of(message.get("content")))
        return "\n".join(part for part in parts if part) or None

    def response(self, result: Any) -> None:
        self.model(result)
        self._usage(getattr(result, "usage", None))
        for block in getattr(result, "content", None) or ():
            if getattr(block, "type", None) == "text":
                self.texts.append(block.text)

    def chunk(self, item: Any) -> bool:
        kind = getattr(item, "type", None)
        if kind == "content_block_delta":
            text = getattr(item.delta, "text", None)
            if isinstance(text, str):
                self.texts.append(text)
            return True  # text, tool-input JSON and thinking deltas are all generated tokens
        if kind == "message_start":
            self.model(item.message)
            self._usage(item.message.usage)
        elif kind == "message_delta":
            self._usage(getattr(item, "usage", None))
        return False

    def _usage(self, usage: Any) -> None:
        """Merge a usage object; message_delta's figures are cumulative and its input fields often None."""
        if usage is None:
            return
        for index, name in enumerate(_INPUT_FIELDS):
            value = getattr(usage, name, None)
            if value is not None:
                self._input[index] = count(value)
        output = getattr(usage, "output_tokens", None)
        output_tokens = count(output) if output is not None else self.fields.get("output_tokens", 0)
        uncached, read, created = self._input
        self.usage(uncached + read + created, output_tokens, read)


class StreamManagerProxy(Proxy):
    """A ``messages.stream(...)`` manager: the request happens in ``__enter__``; its raw stream gets our proxy.

    The SDK's helper stream reads events from its ``_raw_stream``; swapping that for a proxy (before anything
    is read) lets us see every raw event while ``text_stream``, ``get_final_message()`` and friends keep working.
    """

    __slots__ = ("_llmpulse_call", "_llmpulse_kwargs", "_llmpulse_target")

    def __init__(self, wrapped: Any, target: Target, kwargs: dict[str, Any]) -> None:
        super().__init__(wrapped)
        object.__setattr__(self, "_llmpulse_target", target)
        object.__setattr__(self, "_llmpulse_kwargs", kwargs)
        object.__setattr__(self, "_llmpulse_call", None)

    def __enter__(self) -> Any:
        object.__setattr__(self, "_llmpulse_call", start(self._llmpulse_target, self._llmpulse_kwargs))
        try:
            stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            fail(self._llmpulse_call, exc)
            raise
        self._attach(stream)
        return stream

    async def __aenter__(self) -> Any:
        object.__setattr__(self, "_llmpulse_call", start(self._llmpulse_target, self._llmpulse_kwargs))
        try:
            stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            fail(self._llmpulse_call, exc)
            raise
        self._attach(stream)
        return stream

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.__wrapped__.__aexit__(*exc_info)

    @dont_throw
    def _attach(self, stream: Any) -> None:
        call = self._llmpulse_call
        if call is None:
            return
        raw = stream._raw_stream
        proxy = finish(call, raw)
        if proxy is raw:  # not a stream type we know: record what we have rather than nothing
            call.end()
            return
        stream._raw_stream = proxy


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(("messages",), "create", "chat", MessagesReader),
    Endpoint(("messages",), "stream", "chat", MessagesReader, manager_proxy=StreamManagerProxy),
)


def instrument_anthropic(client: Any, pulse: Recorder, *, provider: str = PROVIDER, **fields: Any) -> Any:
    """Wrap an ``Anthropic`` or ``AsyncAnthropic`` instance in place and return it.

    ``fields`` are llm_call fields added to every event of this client (``feature="triage"``, ...).
    """
    anthropic = require("anthropic")
    return instrument_client(client, pulse, provider, ENDPOINTS, (anthropic.Stream, anthropic.AsyncStream), fields)


__all__ = ["ENDPOINTS", "MessagesReader", "instrument_anthropic"]
