"""Time the instrumentation adds to each OpenAI call, broker up and broker down.

    python bench/sdk_overhead.py                              # broker from KAFKA_BOOTSTRAP_SERVERS
    python bench/sdk_overhead.py --local-broker               # start a LocalBroker (JDK + Maven) for the run
    python bench/sdk_overhead.py --calls 3000 --out bench/results/sdk_overhead.json

Two measurements per Pulse (broker up / broker down, the latter pointed at a closed port):

* **http**: the real ``openai`` client against the local fake API, plain and instrumented clients called
  alternately so drift in the machine's speed hits both equally. Reported: median and p99 of each, and the
  median/p99 of the paired difference (instrumented minus the plain call just before it).
* **telemetry path**: the wrapper's own work per call (start a CallTracker, read the reply, record) on an
  already-parsed ChatCompletion, without HTTP: the CPU the instrumentation adds, free of network noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from openai import OpenAI

from llmpulse.producers import Pulse
from llmpulse.producers.instrumentation import instrument_openai
from llmpulse.producers.instrumentation.common import Target, finish, start
from llmpulse.producers.instrumentation.openai import ENDPOINTS
from llmpulse.producers.simulation.fake_llm_api import FakeLLMApi

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how do I restart redis"}]
RESULTS = Path(__file__).parent / "results" / "sdk_overhead.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_us(values: list[float]) -> dict[str, float]:
    return {"median_us": round(statistics.median(values) * 1e6, 1), "p99_us": round(percentile(values, 0.99) * 1e6, 1)}


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def http_overhead(api: FakeLLMApi, pulse: Pulse, calls: int, stream: bool) -> dict[str, Any]:
    options = {"base_url": api.openai_base_url, "api_key": "bench", "max_retries": 0}
    plain = OpenAI(**options)
    instrumented = instrument_openai(OpenAI(**options), pulse=pulse)
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})

    def once(client: OpenAI) -> Callable[[], Any]:
        if stream:
            return lambda: list(client.chat.completions.create(**kwargs))
        return lambda: client.chat.completions.create(**kwargs)

    plain_call, instrumented_call = once(plain), once(instrumented)
    for _ in range(100):  # warm connections, caches and the JIT-less interpreter's dicts
        plain_call()
        instrumented_call()
    plain_times, instrumented_times, deltas = [], [], []
    for index in range(calls):
        first_plain = index % 2 == 0  # alternate the order too, so neither side always goes first
        if first_plain:
            a, b = timed(plain_call), timed(instrumented_call)
        else:
            b, a = timed(instrumented_call), timed(plain_call)
        plain_times.append(a)
        instrumented_times.append(b)
        deltas.append(b - a)
    plain.close()
    instrumented.close()
    return {
        "plain": summary_us(plain_times),
        "instrumented": summary_us(instrumented_times),
        "added": {"median_us": round((statistics.median(instrumented_times) - statistics.median(plain_times)) * 1e6, 1),
                  "paired_median_us": round(statistics.median(deltas) * 1e6, 1),
                  "paired_p99_us": round(percentile(deltas, 0.99) * 1e6, 1)},
    }


def telemetry_path(api: FakeLLMApi, pulse: Pulse, calls: int) -> dict[str, float]:
    """Per-call cost of start() + finish() on a parsed reply: exactly what the wrapper adds around the SDK."""
    client = OpenAI(base_url=api.openai_base_url, api_key="bench", max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client.close()
    target = Target(pulse, "openai", ENDPOINTS[0], (type(None), type(None)), False, {})
    kwargs = {"model": "gpt-4o", "messages": MESSAGES}
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        finish(start(target, kwargs), reply)
        samples.append(time.perf_counter() - started)
    return summary_us(samples)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def broker(local: bool) -> Iterator[str | None]:
    if not local:
        yield os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        return
    from llmpulse.broker import BrokerConfig, LocalBroker

    with tempfile.TemporaryDirectory() as data:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        local_broker = LocalBroker(BrokerConfig.from_env(port=port, data_dir=Path(data)))
        try:
            yield local_broker.start().bootstrap
        finally:
            local_broker.stop()


def run(calls: int, bootstrap: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    pulses = {"broker_down": closed_port()}
    if bootstrap:
        pulses = {"broker_up": bootstrap, **pulses}
    with FakeLLMApi(first_token_delay=0.0) as api:
        for name, servers in pulses.items():
            pulse = Pulse(bootstrap_servers=servers, service="bench", topic="bench-llm-calls", shutdown_timeout_s=2.0)
            try:
                results[name] = {
                    "chat": http_overhead(api, pulse, calls, stream=False),
                    "chat_stream": http_overhead(api, pulse, calls, stream=True),
                    "telemetry_path": telemetry_path(api, pulse, calls * 10),
                    "pulse": {"recorded": pulse.stats().recorded, "dropped": pulse.stats().dropped_buffer_full},
                }
            finally:
                pulse.close(2.0)
    return results


def print_table(results: dict[str, Any]) -> None:
    header = f"{'pulse':<12}{'call':<14}{'plain med':>11}{'instr med':>11}{'plain p99':>11}{'instr p99':>11}" \
             f"{'added med':>11}{'pair med':>10}{'pair p99':>10}"
    print(header)
    print("-" * len(header))
    for pulse, rows in results.items():
        for call in ("chat", "chat_stream"):
            row = rows[call]
            print(f"{pulse:<12}{call:<14}{row['plain']['median_us']:>11}{row['instrumented']['median_us']:>11}"
                  f"{row['plain']['p99_us']:>11}{row['instrumented']['p99_us']:>11}{row['added']['median_us']:>11}"
                  f"{row['added']['paired_median_us']:>10}{row['added']['paired_p99_us']:>10}")
        path = rows["telemetry_path"]
        print(f"{pulse:<12}{'telemetry':<14}{'':>11}{path['median_us']:>11}{'':>11}{path['p99_us']:>11}")
    print("(microseconds per call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per client per scenario")
    parser.add_argument("--bootstrap", default=None, help="broker for the 'broker up' run")
    parser.add_argument("--local-broker", action="store_true", help="start a LocalBroker for the run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # The broker-down Pulse reports every failed reconnect; the benchmark only cares about the caller's time.
    logging.getLogger("llmpulse.sdk").setLevel(logging.CRITICAL)
    with broker(args.local_broker and not args.bootstrap) as found:
        bootstrap = args.bootstrap or found
        results = run(args.calls, bootstrap)
    print_table(results)
    payload = {"calls": args.calls, "python": platform.python_version(), "machine": platform.machine(),
               "cpus": os.cpu_count(), "broker": bootstrap, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
