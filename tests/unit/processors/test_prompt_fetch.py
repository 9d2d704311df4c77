"""The worker's consumer lets the broker hold a fetch at most FETCH_MAX_WAIT_MS, not faust's fixed 1.5 s."""

from __future__ import annotations

import asyncio

from llmpulse.processors.prompt_fetch import FETCH_MAX_WAIT_MS, PromptFetchConsumer
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.wiring import wire


def test_the_worker_consumer_asks_the_broker_to_answer_a_fetch_within_a_tenth_of_a_second() -> None:
    app = wire(ProcessorSettings(bootstrap_servers="127.0.0.1:1")).app  # nothing connects until the app starts
    consumer = app.consumer
    assert isinstance(consumer, PromptFetchConsumer)

    async def kafka_consumer_wait_ms() -> int:
        kafka_consumer = consumer._thread._create_worker_consumer(app.transport)
        return int(kafka_consumer._fetch_max_wait_ms)  # what its fetcher sends as the fetch's max wait

    assert asyncio.run(kafka_consumer_wait_ms()) == FETCH_MAX_WAIT_MS == 100  # faust alone asks for 1500
