"""llmpulse: streaming observability and guardrails for LLM traffic on Apache Kafka.

This root package holds the CLI (``cli``, ``commands``, ``broker``) and the modules the SDK and the processors
share, standard library only: ``config``, ``pii``, ``circuit_breaker``, ``backoff`` (also the examples'). The SDK,
processors and schemas are its subpackages ``llmpulse.producers``, ``llmpulse.processors`` and ``llmpulse.schemas``
(pyproject.toml).
"""

import logging

# A library logs through its own loggers and lets the application decide where they go: without this, an
# application with no logging set up would print every broker reconnect attempt during an outage.
logging.getLogger("llmpulse").addHandler(logging.NullHandler())
