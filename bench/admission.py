"""Guardrails before the call: admit() cost, guard cost per prompt, and how fast a crossed budget stops a fleet.

    python -m bench.admission --quick

* ``admit_p99_us``: ``Pulse.admit`` in enforce mode with fresh fleet state, every local limit on, a mix of
  users; in-process, no broker.
* ``guard_prompt_p50_us_<n>`` / ``guard_prompt_p99_us_<n>``: the SDK's input guard (the worker's injection
  detectors) on one prompt of n characters, for 256 B, 2 kB and 8 kB prompts of realistic text, wall clock
  (gc on, as in the SDK; 10 warm-up calls); ``guard_prompt_cpu_p99_us_<n>``: the same calls in thread CPU time.
* ``budget_propagation_p99_s`` and ``overspend_seconds`` (needs a broker): a real worker with a $5/hour service
  budget and 4 SDK processes at 250 calls/s each ($0.002 a call, so $2/s). Propagation: from the fleet stage
  publishing ``exhausted`` (the record's ``updated_at_ms``) to each process's first denial; the p99 over the
  processes and runs. Overspend: spend admitted beyond the limit, in seconds of the fleet's spend rate.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import QUICK, GroupResult, Scale

KEYS = ("admit_p99_us", "guard_prompt_p50_us_2kb", "guard_prompt_p99_us_2kb", "budget_propagation_p99_s",
        "overspend_seconds")
PROCESSES = 4
RATE_PER_PROCESS = 250.0
COST_MICROS = 2_000
LIMIT_USD = 5.0
WORDS = (
    "the", "customer", "asked", "about", "their", "order", "refund", "shipping", "delay", "invoice", "account",
    "password", "reset", "please", "help", "summarise", "this", "conversation", "and", "list", "the", "follow",
    "up", "actions", "for", "the", "support", "team", "with", "dates"
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def admit_p99_us(samples: int) -> float:
    from llmpulse.producers.admission import AdmissionGate, AdmissionSettings
    from llmpulse.producers.budget_state import BudgetStateFollower
    from llmpulse.producers.prices import PriceTable

    follower = BudgetStateFollower(None)
    follower._reachable = True  # fed by hand below, as the follower thread would
    follower._ready.set()
    now = int(time.time() * 1000)
    for i in range(200):
        follower.apply_record({"scope": "user", "key": f"u{i}", "period": "day", "bucket_start_ms": now,
                               "bucket_end_ms": now + 86_400_000, "spent_micros": 5, "limit_micros": 10,
                               "state": "ok", "projected_exhaustion_ms": None, "updated_at_ms": now})
    follower.apply_record({"scope": "global", "key": "all", "period": "hour", "bucket_start_ms": now,
                           "bucket_end_ms": now + 3_600_000, "spent_micros": 5, "limit_micros": 10,
                           "state": "ok", "projected_exhaustion_ms": None, "updated_at_ms": now})
    settings = AdmissionSettings(mode="enforce", max_request_cost_usd=0.5, max_tokens_per_request=100_000,
                                 max_average_tokens=100_000, user_requests_per_minute=1e9, max_state_age_s=3600,
                                 fail_closed=False, default_max_output_tokens=1024)
    prices = PriceTable({"gpt-4o": {"input": 2.5, "output": 10}}, catalogue=False)
    gate = AdmissionGate(settings, follower, None, prices)
    users = [f"u{i}" for i in range(200)]
    timings = []
    clock = time.perf_counter
    for i in range(samples):
        user = users[i % 200]
        started = clock()
        gate.admit(service="bench", user=user, model="gpt-4o", provider="openai", estimated_input_tokens=800,
                   max_output_tokens=400)
        timings.append(clock() - started)
    return _percentile(timings[samples // 10 :], 0.99) * 1e6


def guard_costs(samples: int) -> dict[str, float]:
    from llmpulse.producers.prompt_guard import PromptGuard

    guard = PromptGuard("observe")
    rng = random.Random(7)
    out: dict[str, float] = {}
    for label, size in (("256b", 256), ("2kb", 2048), ("8kb", 8192)):
        prompts = [" ".join(rng.choice(WORDS) for _ in range(size // 4))[:size] for _ in range(50)]
        for prompt in prompts[:10]:
            guard.check(prompt)
        timings, cpu = [], []
        for i in range(samples):
            started, cpu_started = time.perf_counter(), time.thread_time()
            guard.check(prompts[i % len(prompts)])
            timings.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - cpu_started)
        out[f"guard_prompt_p50_us_{label}"] = statistics.median(timings) * 1e6
        out[f"guard_prompt_p99_us_{label}"] = _percentile(timings, 0.99) * 1e6
        # The same calls in this thread's CPU time: on a busy machine the wall-clock p99 is the scheduler's.
        out[f"guard_prompt_cpu_p99_us_{label}"] = _percentile(cpu, 0.99) * 1e6
    return out


def _sdk_process(args: dict[str, Any]) -> None:
    """One SDK process: admit at a fixed rate, record what was admitted, stop 3 s after its first denial."""
    from llmpulse.producers import AdmissionSettings, Pulse

    settings = AdmissionSettings(mode="enforce", max_state_age_s=30, fail_closed=False)
    pulse = Pulse(service="bench-gate", bootstrap_servers=args["bootstrap"], topic=args["calls"],
                  budget_state_topic=args["budget_state"], linger_ms=100, admission=settings)
    assert pulse.gate.budgets is not None
    pulse.gate.budgets.wait_ready(30)
    ready_by = time.monotonic() + 60
    while not pulse.gate.budgets.fresh(30, int(time.time() * 1000)) and time.monotonic() < ready_by:
        time.sleep(0.05)  # the worker's heartbeat: start every process on fresh state
    admitted: list[float] = []
    first_denial = None
    interval = 1.0 / args["rate"]
    next_at = time.monotonic()
    deadline = time.monotonic() + args["max_s"]
    while time.monotonic() < deadline:
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        if pulse.admit(model="gpt-4o", provider="openai", estimated_input_tokens=100).allowed:
            pulse.record(provider="openai", request_model="gpt-4o", latency_ms=10.0, cost_micros=args["cost"])
            admitted.append(now)
        elif first_denial is None:
            first_denial = now
            deadline = time.monotonic() + 3.0
    pulse.close(10)
    print(json.dumps({"admitted": admitted, "first_denial": first_denial}))


def _exhausted_at_ms(bootstrap: str, topic: str) -> int | None:
    """``updated_at_ms`` of the first exhausted service record on the budget-state topic."""
    from confluent_kafka import Consumer

    from llmpulse import schemas
    from llmpulse.schemas.single_object import SchemaCodec

    codec = SchemaCodec(schemas.BUDGET_STATE)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found = None
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            record = codec.decode(message.value())
            if record["scope"] == "service" and record["state"] == "exhausted":
                found = record["updated_at_ms"] if found is None else min(found, record["updated_at_ms"])
                break
    finally:
        consumer.close()
    return found


def fleet_run(bootstrap: str, quick: bool) -> tuple[list[float], list[float]]:
    """(propagation seconds per process, overspend seconds per run)."""
    from tests.support.worker import WorkerProcess

    propagation: list[float] = []
    overspend: list[float] = []
    for _ in range(1 if quick else 3):
        workdir = Path(tempfile.mkdtemp(prefix="bench-gate-"))
        worker = WorkerProcess(bootstrap, workdir, extra_env={"LLMPULSE_BUDGETS__SERVICE_HOUR_USD": str(LIMIT_USD)})
        worker.start(timeout=120)
        try:
            args = {"bootstrap": bootstrap, "calls": worker.topic("calls"),
                    "budget_state": worker.topic("budget_state"), "rate": RATE_PER_PROCESS, "cost": COST_MICROS,
                    "max_s": 30.0}
            procs = [subprocess.Popen([sys.executable, "-m", "bench.admission", "--sdk", json.dumps(args)],
                                      stdout=subprocess.PIPE, env={**os.environ}) for _ in range(PROCESSES)]
            try:
                results = [json.loads(p.communicate(timeout=150)[0].decode().strip().splitlines()[-1])
                           for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            exhausted_ms = _exhausted_at_ms(bootstrap, worker.topic("budget_state"))
        finally:
            worker.stop()
        times = sorted(t for r in results for t in r["admitted"])
        limit_calls = int(LIMIT_USD * 1_000_000 // COST_MICROS)
        if len(times) > limit_calls:
            crossing = times[limit_calls - 1]  # the call that brought spend to the limit
            over = len(times) - limit_calls
            overspend.append(over * COST_MICROS / (PROCESSES * RATE_PER_PROCESS * COST_MICROS))
            if exhausted_ms is not None:
                propagation += [r["first_denial"] - exhausted_ms / 1000 for r in results if r["first_denial"]]
            print(f"[admission] crossing at {crossing:.3f}, exhausted published {exhausted_ms}, over {over} calls",
                  file=sys.stderr)
    return propagation, overspend


def run(scale: Scale, bootstrap: str | None) -> GroupResult:
    quick = scale.name == QUICK.name
    result = GroupResult()
    result.put("admit_p99_us", admit_p99_us(20_000 if quick else 200_000),
               "Pulse gate, enforce, fresh state, all local limits on; in-process")
    for key, value in guard_costs(1_000 if quick else 5_000).items():
        result.put(key, value, "SDK input guard (worker's injection patterns + classifier), one prompt")
    if bootstrap is None:
        for key in ("budget_propagation_p99_s", "overspend_seconds"):
            result.put(key, None, "skipped: no broker")
        return result
    propagation, overspend = fleet_run(bootstrap, quick)
    note = f"{PROCESSES} SDK processes x {RATE_PER_PROCESS:.0f} calls/s, real worker, {len(overspend)} run(s)"
    result.put("budget_propagation_p99_s", max(propagation) if propagation else None,
               f"{note}; exhausted record published -> each process's first denial (max over processes)")
    result.put("overspend_seconds", max(overspend) if overspend else None,
               f"{note}; spend admitted beyond the limit / fleet spend per second (worst run)")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--sdk":
        _sdk_process(json.loads(sys.argv[2]))
    else:
        from bench.common import FULL

        figures = run(QUICK if "--quick" in sys.argv else FULL, os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
        print(json.dumps(figures.figures, indent=2))
