"""The test rig: simulated LLM traffic, incident scenarios, a fake OpenAI/Anthropic API and trace replay.

Not part of the SDK a service embeds. Install with the ``simulation`` extra (numpy); ``llmpulse simulate``,
the benchmarks, the demo and the tests use it:

* ``traffic_model``: per-service workloads fitted from real traces (``data/traffic_model.json``);
  ``derive_traffic_model`` refits it.
* ``scenarios``: the incidents the simulator can inject; ``simulator``: columns of calls over time.
* ``trace_replay``: reads real traces as llm_call records; ``fake_llm_api``: a local OpenAI/Anthropic server.
"""
