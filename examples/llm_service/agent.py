"""A small tool-using agent: the model may look up runbooks, up to ``max_iterations`` model calls per question.

Each iteration is one LLM call (with its retries); the service observes how many iterations and tool calls an
investigation took (``ai_agent_iterations``, ``ai_agent_tool_calls``), the signal of an agent stuck in a loop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

RUNBOOKS = {
    "oom": "OOMKilled: kubectl top pods; raise the memory limit; kubectl rollout restart.",
    "crash": "CrashLoopBackOff: kubectl logs --previous; OOMKilled: raise memory; rollback: kubectl rollout undo.",
    "latency": "High latency: kubectl top pods; check upstream dependencies and recent deploys.",
    "redis": "Redis: redis-cli ping; INFO memory; maxmemory-policy allkeys-lru.",
    "db": "DB connections: pg_stat_activity; pg_terminate_backend for idle ones; pool with pgbouncer.",
}
TOOLS = [{
    "type": "function",
    "function": {
        "name": "lookup_runbook",
        "description": f"The runbook for one topic: {', '.join(RUNBOOKS)}.",
        "parameters": {"type": "object", "properties": {"topic": {"type": "string", "enum": list(RUNBOOKS)}},
                       "required": ["topic"]},
    },
}]
SYSTEM = "You are an SRE assistant. Look up runbooks with the tool, then answer from them only."
STOPPED = "I don't know: the investigation stopped after {n} steps without an answer."

# messages -> (model, reply): one chat completion, with the service's retries, accounting and failover
Complete = Callable[[list[dict[str, Any]]], Awaitable[tuple[str, Any]]]


@dataclass(frozen=True, slots=True)
class Investigation:
    answer: str
    model: str
    iterations: int
    tool_calls: int
    finished: bool  # False: max_iterations was reached while the model still asked for tools


def run_tool(name: str, arguments: str) -> str:
    if name != "lookup_runbook":
        return f"unknown tool {name!r}"
    try:
        topic = str(json.loads(arguments or "{}").get("topic", "")).lower()
    except (ValueError, AttributeError):
        return "arguments must be a JSON object with a topic"
    return RUNBOOKS.get(topic, f"no runbook for {topic!r}; topics: {', '.join(RUNBOOKS)}")


async def investigate(complete: Complete, question: str, max_iterations: int = 5) -> Investigation:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    tool_calls, model = 0, ""
    for iteration in range(1, max_iterations + 1):
        model, reply = await complete(messages)
        message = reply.choices[0].message
        calls = list(message.tool_calls or [])
        if not calls:
            return Investigation(message.content or "", model, iteration, tool_calls, finished=True)
        tool_calls += len(calls)
        messages.append({"role": "assistant", "content": message.content, "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in calls]})
        messages += [{"role": "tool", "tool_call_id": c.id, "content": run_tool(c.function.name, c.function.arguments)}
                     for c in calls]
    return Investigation(STOPPED.format(n=max_iterations), model, max_iterations, tool_calls, finished=False)
