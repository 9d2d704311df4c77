"""Drop-in instrumentation for the OpenAI and Anthropic Python clients.

    from llmpulse.producers import Pulse
    from llmpulse.producers.instrumentation import instrument_openai, instrument_anthropic, uninstrument

    pulse = Pulse()
    client = instrument_openai(OpenAI(), pulse=pulse)          # or AsyncOpenAI, Anthropic, AsyncAnthropic
    ...
    uninstrument(client)                                      # the client is exactly as before

Each call becomes one ``llm_call`` event (provider, models, operation, latency, time to first token for
streams, token usage, status and error type). What the caller receives or raises never changes. The client
libraries are optional: ``pip install 'llmpulse[instrument]'``; importing this package does not import them.
"""

from llmpulse.producers.instrumentation.anthropic import instrument_anthropic
from llmpulse.producers.instrumentation.common import is_instrumented, uninstrument
from llmpulse.producers.instrumentation.openai import instrument_openai

__all__ = ["instrument_anthropic", "instrument_openai", "is_instrumented", "uninstrument"]
