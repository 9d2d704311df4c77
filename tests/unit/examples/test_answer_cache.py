"""The example service's TTL answer cache: entries expire, a hit makes no LLM call and is recorded as an llm_call
with cache_hit and cost 0 (schemas/llm_call.v2.avsc)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
from prometheus_client import CollectorRegistry

from examples.llm_service.app import Service, ServiceConfig
from examples.llm_service.cache import TTLCache, cache_key
from llmpulse.producers.batching import BatchEncoder
from tests.support.recording import RecordingPulse
from tests.support.scripted_llm import ScriptedLLM, completion, sample


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(ttl_s=60, clock=clock)
    cache.put("k", "v")
    clock.now += 59.9
    assert cache.get("k") == "v"
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0  # the expired entry is gone, not only hidden


def test_full_cache_drops_the_oldest_and_put_refreshes() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(ttl_s=60, max_entries=2, clock=clock)
    cache.put("a", 1)
    clock.now += 1
    cache.put("b", 2)
    clock.now += 1
    cache.put("a", 3)  # refreshed: now the newest
    cache.put("c", 4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (3, None, 4)
    clock.now += 59.5  # "a" and "c" were put at the same moment, "b" is gone already
    cache.put("d", 5)
    assert len(cache) == 2
    clock.now += 1
    cache.put("e", 6)  # putting sweeps the expired ones from the front
    assert len(cache) == 2 and cache.get("d") == 5


def test_keys_ignore_case_and_spacing_and_bad_sizes_are_refused() -> None:
    assert cache_key("  How do I   restart Redis ") == cache_key("how do i restart redis")
    with pytest.raises(ValueError):
        TTLCache(ttl_s=0)


def test_a_hit_is_recorded_as_a_cache_hit_that_cost_nothing(pulse: RecordingPulse) -> None:
    llm = ScriptedLLM(completion("Use redis-cli ping.", prompt_tokens=1000, completion_tokens=500),
                      completion("Use redis-cli ping again."))
    service = Service(ServiceConfig(models=("gpt-4o",)), pulse, CollectorRegistry(), http_client=llm.http_client())
    clock = Clock()
    service.cache = TTLCache(ttl_s=300, clock=clock)

    first = asyncio.run(service.ask("How do I check Redis?", user="u-1"))
    second = asyncio.run(service.ask("how do I check  redis?", user="u-1"))

    assert len(llm.bodies) == 1
    assert (first["cached"], first["cost_usd"]) == (False, 0.0075)  # 1000 * 2.50 + 500 * 10.00 per million
    assert second == {**first, "cached": True, "cost_usd": 0.0}
    call, hit = pulse.calls
    assert not call.get("cache_hit") and call.get("status", "ok") == "ok" and call["input_tokens"] == 1000
    assert hit["cache_hit"] is True and hit["cost_micros"] == 0 and hit["status"] == "ok"
    assert (hit["request_model"], hit["feature"], hit["user_hash"]) == ("gpt-4o", "ask", "u-1")
    assert hit.get("input_tokens", 0) == hit.get("output_tokens", 0) == 0
    row = {**hit, "event_id": "e" * 32, "service": "llm-service", "timestamp_ms": 1}
    assert BatchEncoder("test").encode_call(row)  # a valid llm_call
    assert sample(service.metrics.cache, "_total", result="hit") == 1
    assert sample(service.metrics.cache, "_total", result="miss") == 1
    assert sample(service.metrics.cost, "_total", model="gpt-4o") == pytest.approx(0.0075)  # the hit added nothing

    clock.now += 300  # expired: the next ask calls the model again
    third = asyncio.run(service.ask("How do I check Redis?"))
    assert third["cached"] is False and third["answer"] == "Use redis-cli ping again."
    assert len(llm.bodies) == 2 and sample(service.metrics.cache, "_total", result="miss") == 2
