"""Realistic llm_call rows, packed the way the SDK packs them, and topics pre-loaded with them.

Rows come from the simulator's traffic model (``generate_calls``) when it is installed, else from a small
synthetic model (lognormal tokens, latency from tokens). A tenth of the calls carry prompt and response text,
so the guards have work. Records are ``llm_call_batch`` of up to 500 calls of one service, keyed by service,
exactly as ``Pulse`` writes them.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from llmpulse.broker import answers
from llmpulse.producers.batching import BatchEncoder, new_event_id
from llmpulse.producers.settings import PulseSettings

CALLS_PER_RECORD = 500
TEXT_SHARE = 0.10
# Event-time density of generated traffic: what a worker near its limit sees (slots, windows per batch).
TRAFFIC_RATE = 10_000.0
PARTITIONS = 3
_FALLBACK_SERVICES = ("support-bot", "search-summarizer", "code-review", "checkout-assistant")
_FALLBACK_MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-haiku-20240307"))
_FALLBACK_TEXT = (("How do I reset my password?", "Open Settings, choose Security, then Reset password."),
                  ("Summarise this ticket for me", "The customer reports a late delivery and asks for a refund."))


def realistic_rows(n: int, seed: int = 7, rate: float = TRAFFIC_RATE) -> list[dict[str, Any]]:
    """``n`` llm_call dicts ending now, ``TEXT_SHARE`` of them with prompt/response text, event ids set."""
    rng = np.random.default_rng(seed)
    try:
        from llmpulse.producers.simulation.simulator import generate_calls
    except ImportError:  # the simulator is optional for the benchmarks
        rows = _synthetic_rows(n, rng, rate)
    else:
        rows = generate_calls(n, rng, rate=rate)
    _top_up_text(rows, rng)
    for row in rows:
        row["event_id"] = new_event_id()
    return rows


def _synthetic_rows(n: int, rng: np.random.Generator, rate: float) -> list[dict[str, Any]]:
    end = int(time.time() * 1000)
    stamps = end - np.sort(rng.uniform(0, n / rate * 1000, n)).astype(np.int64)[::-1]
    inputs = np.clip(rng.lognormal(6.0, 1.0, n), 1, 100_000).astype(int)
    outputs = np.clip(rng.lognormal(4.5, 0.9, n), 1, 8_000).astype(int)
    latency = 200 * rng.lognormal(0, 0.3, n) + outputs * 20 * rng.lognormal(0, 0.2, n) + inputs * 0.05
    services = rng.integers(0, len(_FALLBACK_SERVICES), n)
    models = rng.integers(0, len(_FALLBACK_MODELS), n)
    return [
        {"timestamp_ms": int(stamps[i]), "service": _FALLBACK_SERVICES[services[i]],
         "provider": _FALLBACK_MODELS[models[i]][0], "request_model": _FALLBACK_MODELS[models[i]][1],
         "status": "ok", "latency_ms": float(latency[i]), "input_tokens": int(inputs[i]),
         "output_tokens": int(outputs[i]), "confidence": float(rng.uniform(0.5, 1.0))}
        for i in range(n)
    ]


def _top_up_text(rows: list[dict[str, Any]], rng: np.random.Generator) -> None:
    """Copy texts the model produced onto more calls until ``TEXT_SHARE`` of them carry text."""
    with_text = [row for row in rows if row.get("prompt_text") or row.get("response_text")]
    pairs = [(row.get("prompt_text"), row.get("response_text")) for row in with_text] or list(_FALLBACK_TEXT)
    missing = int(TEXT_SHARE * len(rows)) - len(with_text)
    if missing <= 0:
        return
    bare = np.flatnonzero([not (row.get("prompt_text") or row.get("response_text")) for row in rows])
    for index in rng.choice(bare, size=min(missing, bare.size), replace=False).tolist():
        prompt, response = pairs[int(rng.integers(len(pairs)))]
        rows[index]["prompt_text"], rows[index]["response_text"] = prompt, response


def batch_records(rows: Sequence[dict[str, Any]], per_record: int = CALLS_PER_RECORD) -> list[tuple[bytes, bytes, int]]:
    """(key, value, calls) per llm_call_batch record: rows grouped by service, in arrival order."""
    encoder = BatchEncoder(producer_id="bench")
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_service.setdefault(row["service"], []).append(row)
    records = []
    for service, group in by_service.items():
        for start in range(0, len(group), per_record):
            chunk = group[start : start + per_record]
            records.append((service.encode(), encoder.encode_batch(chunk), len(chunk)))
    return records


def sdk_records(rows: Sequence[dict[str, Any]],
                settings: PulseSettings | None = None) -> list[tuple[bytes, bytes, int]]:
    """(key, value, calls) per llm_call_batch record as each service's SDK sends them (``settings``: the SDK's
    defaults): every ``linger_ms`` of event time, a service's pending calls go out when ``batch_min_calls`` of them
    wait or the oldest has waited ``max_linger_ms``, and at once at ``batch_max_calls``; the records in the order
    they are sent. A quiet service sends a record of its calls of about a second."""
    settings = settings or PulseSettings()
    enough = min(settings.batch_min_calls, settings.batch_max_calls)
    encoder = BatchEncoder(producer_id="bench")
    pending: dict[str, list[dict[str, Any]]] = {}
    records: list[tuple[bytes, bytes, int]] = []

    def send(service: str) -> None:
        calls = pending.pop(service)
        records.append((service.encode(), encoder.encode_batch(calls), len(calls)))

    def wake(now: int) -> None:
        for service in [service for service, calls in pending.items()
                        if len(calls) >= enough or now - calls[0]["timestamp_ms"] >= settings.max_linger_ms]:
            send(service)

    woke: int | None = None
    for row in sorted(rows, key=lambda row: row["timestamp_ms"]):
        now = row["timestamp_ms"]
        if woke is None or now - woke >= settings.linger_ms:
            wake(now)
            woke = now
        pending.setdefault(row["service"], []).append(row)
        if len(pending[row["service"]]) >= settings.batch_max_calls:
            send(row["service"])
    for service in list(pending):
        send(service)
    return records


def single_records(rows: Sequence[dict[str, Any]]) -> list[tuple[bytes, bytes, int]]:
    """One ``llm_call`` record per row (the shape a one-event-per-record pipeline reads)."""
    encoder = BatchEncoder(producer_id="bench")
    return [(row["service"].encode(), encoder.encode_call(row), 1) for row in rows]


def run_tag() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def producer_config(bootstrap: str) -> dict[str, Any]:
    """The SDK's own producer settings (idempotent, lz4, short librdkafka linger)."""
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": "lz4",
            "linger.ms": 5, "queue.buffering.max.kbytes": 1_048_576, "message.max.bytes": 16 * 1024 * 1024}


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names], operation_timeout=30)
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def delete_topics_with(bootstrap: str, tag: str) -> int:
    """Delete every topic whose name contains ``tag`` (the benchmark's own, incl. the worker's changelogs)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [name for name in admin.list_topics(timeout=10).topics if tag in name]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            # Already gone or still being created: nothing the benchmark can do about it.
            with contextlib.suppress(KafkaException):
                future.result(30)
    return len(names)


def preload(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes, int]]) -> None:
    """Write ``records`` to ``topic`` (created with PARTITIONS partitions) and wait for every ack."""
    create_topics(bootstrap, [topic])
    producer = Producer(producer_config(bootstrap))
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value, _calls in records:
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) or failures:
        raise RuntimeError(f"pre-loading {topic} failed: {failures[:3] or 'records still queued'}")


def broker_up(bootstrap: str, timeout: float = 5.0) -> bool:
    """Whether a broker answers at ``bootstrap`` (``llmpulse.broker.answers``: a closed port is told by a plain
    connect, so nothing is logged when there is no broker, as there usually is not for a newcomer's first run)."""
    return answers(bootstrap, timeout)
