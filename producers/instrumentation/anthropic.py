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
    Reader,
    Recorder,
    count,
    instrument_client,
    require,
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


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(("messages",), "create", "chat", MessagesReader),
    Endpoint(("messages",), "stream", "chat", MessagesReader, stream_manager=True),
)


def instrument_anthropic(client: Any, pulse: Recorder, *, provider: str = PROVIDER, **fields: Any) -> Any:
    """Wrap an ``Anthropic`` or ``AsyncAnthropic`` instance in place and return it.

    ``fields`` are llm_call fields added to every event of this client (``feature="triage"``, ...).
    """
    anthropic = require("anthropic")
    return instrument_client(client, pulse, provider, ENDPOINTS, (anthropic.Stream, anthropic.AsyncStream), fields)


__all__ = ["ENDPOINTS", "MessagesReader", "instrument_anthropic"]
