"""``instrument_openai(client, pulse=pulse)``: record every OpenAI call of one client, changing nothing else.

Covered (sync ``OpenAI`` and async ``AsyncOpenAI``, also Azure/compatible endpoints via ``base_url``):

* ``chat.completions.create``, plain and ``stream=True``; with ``stream_options={"include_usage": True}``
  the usage arrives in the last chunk (which has no choices) and is recorded; without it a stream has none;
* ``responses.create``, plain and streamed (usage from the ``response.completed`` event);
* ``embeddings.create`` (operation ``embeddings``, output tokens 0).

Token convention (same as OpenAI's): ``input_tokens`` = ``prompt_tokens``, which already *includes* the
cached prompt tokens; ``cached_tokens`` = ``prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

from typing import Any

from llmpulse.producers.instrumentation.common import (
    Endpoint,
    Reader,
    Recorder,
    instrument_client,
    require,
    text_of,
)

PROVIDER = "openai"  # gen_ai.provider.name


def _messages_text(messages: Any) -> str | None:
    if not isinstance(messages, list | tuple):
        return None
    return "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict)) or None


class ChatReader(Reader):
    __slots__ = ()

    def prompt(self, kwargs: dict[str, Any]) -> str | None:
        return _messages_text(kwargs.get("messages"))

    def response(self, result: Any) -> None:
        self.model(result)
        self._usage(getattr(result, "usage", None))
        for choice in getattr(result, "choices", None) or ():
            content = getattr(getattr(choice, "message", None), "content", None)
            if isinstance(content, str):
                self.texts.append(content)

    def chunk(self, item: Any) -> bool:
        if "response_model" not in self.fields:
            self.model(item)
        usage = getattr(item, "usage", None)
        if usage is not None:  # the include_usage chunk, last in the stream
            self._usage(usage)
        has_content = False
        for choice in getattr(item, "choices", None) or ():
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            if content:
                self.texts.append(content)
                has_content = True
            elif getattr(delta, "tool_calls", None) or getattr(delta, "refusal", None):
                has_content = True
        return has_content

    def _usage(self, usage: Any) -> None:
        if usage is None:
            return
        details = getattr(usage, "prompt_tokens_details", None)
        self.usage(usage.prompt_tokens, usage.completion_tokens, getattr(details, "cached_tokens", 0))


class EmbeddingsReader(Reader):
    __slots__ = ()

    def prompt(self, kwargs: dict[str, Any]) -> str | None:
        given = kwargs.get("input")
        if isinstance(given, str):
            return given
        if isinstance(given, list | tuple) and all(isinstance(text, str) for text in given):
            return "\n".join(given)
        return None  # token-id inputs carry no text

    def response(self, result: Any) -> None:
        self.model(result)
        usage = getattr(result, "usage", None)
        if usage is not None:
            self.usage(usage.prompt_tokens, 0, 0)


class ResponsesReader(Reader):
    __slots__ = ()

    def prompt(self, kwargs: dict[str, Any]) -> str | None:
        given = kwargs.get("input")
        text = given if isinstance(given, str) else _messages_text(given)
        instructions = kwargs.get("instructions")
        parts = [part for part in (instructions, text) if isinstance(part, str) and part]
        return "\n".join(parts) or None

    def response(self, result: Any) -> None:
        self.model(result)
        usage = getattr(result, "usage", None)
        if usage is not None:
            details = getattr(usage, "input_tokens_details", None)
            self.usage(usage.input_tokens, usage.output_tokens, getattr(details, "cached_tokens", 0))
        text = getattr(result, "output_text", None)
        if isinstance(text, str) and not self.texts:
            self.texts.append(text)

    def chunk(self, item: Any) -> bool:
        kind = getattr(item, "type", "")
        if kind == "response.output_text.delta":
            delta = getattr(item, "delta", "")
            self.texts.append(delta if isinstance(delta, str) else "")
            return True
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.response(item.response)
        elif kind == "response.created":
            self.model(getattr(item, "response", None))
        return False


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(("chat", "completions"), "create", "chat", ChatReader),
    Endpoint(("responses",), "create", "chat", ResponsesReader),
    Endpoint(("embeddings",), "create", "embeddings", EmbeddingsReader),
)


def instrument_openai(client: Any, pulse: Recorder, *, provider: str = PROVIDER, **fields: Any) -> Any:
    """Wrap an ``OpenAI`` or ``AsyncOpenAI`` instance in place and return it.

    ``fields`` are llm_call fields added to every event of this client (``feature="search"``,
    ``labels={...}``). Copies made later with ``client.with_options(...)`` are not instrumented.
    """
    openai = require("openai")
    return instrument_client(client, pulse, provider, ENDPOINTS, (openai.Stream, openai.AsyncStream), fields)


__all__ = ["ENDPOINTS", "ChatReader", "EmbeddingsReader", "ResponsesReader", "instrument_openai"]
