"""The OpenAI API as a script, for the example service's tests (tests/unit/examples): the real OpenAI client on an
httpx MockTransport gets the next scripted answer per request, in process, with no network."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx

Answer = httpx.Response | Callable[[dict[str, Any]], httpx.Response]


def completion(content: str | None = "Restart it with kubectl rollout restart.", *,
               tool_calls: Sequence[tuple[str, dict[str, Any]]] = (), prompt_tokens: int = 10,
               completion_tokens: int = 5, model: str = "gpt-4o") -> httpx.Response:
    """A chat.completion; ``tool_calls`` are (tool name, arguments) pairs."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(tool_calls)]
    return httpx.Response(200, json={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": f"{model}-2024",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def failure(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"message": f"scripted {status}", "type": "x"}})


class ScriptedLLM:
    """The OpenAI API as a queue of answers; ``bodies`` are the JSON requests it received."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        assert self.answers, f"unscripted LLM request: {body}"
        answer = self.answers.pop(0)
        return answer(body) if callable(answer) else answer

    def http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


class Sleeps:
    """Stands in for asyncio.sleep between attempts: keeps the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def sample(metric: Any, suffix: str = "", **labels: str) -> float:
    """The value of one sample of a prometheus_client metric (``suffix`` e.g. "_sum", "_bucket")."""
    for family in metric.collect():
        for s in family.samples:
            if s.name == family.name + suffix and s.labels == labels:
                return s.value
    raise KeyError(f"{suffix} {labels}")
