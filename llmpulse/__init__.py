"""llmpulse: streaming observability and guardrails for LLM traffic on Apache Kafka."""

import logging

# A library logs through its own loggers and lets the application decide where they go: without this, an
# application with no logging set up would print every broker reconnect attempt during an outage.
logging.getLogger("llmpulse").addHandler(logging.NullHandler())
