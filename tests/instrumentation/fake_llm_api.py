"""The fake OpenAI/Anthropic API the instrumentation tests point the real clients at.

The server itself lives in ``llmpulse.producers.fake_llm_api`` (the example service and the benchmark use it
too); this module re-exports it for the tests and runs it standalone:

    python tests/instrumentation/fake_llm_api.py --port 8808
"""

from llmpulse.producers.fake_llm_api import FakeLLMApi, main, reply_for, words

__all__ = ["FakeLLMApi", "main", "reply_for", "words"]

if __name__ == "__main__":
    main()
