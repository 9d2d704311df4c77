"""The worker's consumer asks the broker to hold a fetch for at most ``FETCH_MAX_WAIT_MS``.

faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting to change it. aiokafka keeps one
fetch in flight per broker, and leaves out of it every partition whose records are still waiting to be consumed.
So after the calls partitions were fetched ahead, the next fetch may name only quiet partitions (the commands
topic, the fleet topic between summaries); the broker holds it until data arrives there or the wait ends, and the
calls partitions, consumed in the meantime, are fetched again only then. The worker sat idle for up to 1.5 s at a
time, with records waiting on the broker: at 80% of its rate that backlog took seconds to drain, and pages waited
behind it. A short wait bounds that pause; an empty answer now and then costs the broker next to nothing.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100


class _PromptFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer


class PromptFetchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _PromptFetchThread(self, loop=self.loop, beacon=self.beacon)


def use_prompt_fetches(app: faust.App) -> None:
    """Give ``app`` (not started yet) a consumer whose fetches the broker holds at most ``FETCH_MAX_WAIT_MS``."""
    app.transport.Consumer = PromptFetchConsumer
