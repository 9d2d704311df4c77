"""What each way onto llmpulse costs: decode time per call for every wire format, and the worker's throughput on an
OTLP topic against the Avro batch topic in the same run.

* ``decode_us_per_call_*``: the same realistic calls as Avro batches of 500 (the SDK), single-object Avro records
  (one call each), OTLP ``ExportTraceServiceRequest``s of 500 GenAI spans in protobuf and in OTLP/JSON (spans made
  as ``ReadableSpan``s and encoded by the real OpenTelemetry encoders, as the Collector's Kafka exporter writes
  them), and JSON arrays of 500 calls; each decoded to CallColumns by the worker's own decoders, validation on, in
  groups of records as the calls agent takes them.
* ``worker_otlp_vs_avro``: a real worker on a pre-loaded ``otlp_proto`` topic (its calls topic empty), calls/s
  against a real worker on the same calls as Avro batches, runs alternated.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import dataset, throughput
from bench.common import GroupResult, Scale, alternating, describe, medians, now_ms, ratio
from llmpulse.processors import configure
from llmpulse.processors.agents.calls import record_groups
from llmpulse.processors.settings import ProcessorSettings
from llmpulse.processors.wire.otlp import OtlpDecoder
from llmpulse.producers.batching import FIELDS, BatchEncoder

FIGURES = ("decode_us_per_call_avro_batch", "decode_us_per_call_avro_single", "decode_us_per_call_otlp_proto",
           "decode_us_per_call_otlp_json", "decode_us_per_call_json", "worker_otlp_vs_avro")
PER_RECORD = dataset.CALLS_PER_RECORD


def _by_service(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["service"], []).append(row)
    return [group[i : i + PER_RECORD] for group in groups.values() for i in range(0, len(group), PER_RECORD)]


def _spans(chunk: Sequence[dict[str, Any]]) -> list[Any]:
    """The calls as finished GenAI client spans (current semconv), one resource per service."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

    resource = Resource.create({"service.name": chunk[0]["service"]})
    spans = []
    for row in chunk:
        end_ns = int(row["timestamp_ms"]) * 1_000_000
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": row["provider"],
            "gen_ai.request.model": row["request_model"], "gen_ai.usage.input_tokens": int(row["input_tokens"]),
            "gen_ai.usage.output_tokens": int(row["output_tokens"]), "server.address": "api.example.com",
        }
        failed = row.get("status", "ok") != "ok"
        if failed:
            attributes["error.type"] = row.get("error_type") or str(row["status"])
        context = SpanContext(int(uuid.uuid4().hex, 16), int(uuid.uuid4().hex[:16], 16), is_remote=False)
        spans.append(ReadableSpan(
            name=f"chat {row['request_model']}", context=context, attributes=attributes, resource=resource,
            kind=SpanKind.CLIENT, start_time=end_ns - int(float(row["latency_ms"]) * 1_000_000), end_time=end_ns,
            status=Status(StatusCode.ERROR if failed else StatusCode.UNSET),
        ))
    return spans


def encoded(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[bytes, int]]]:
    """(record bytes, calls) per wire format, for the same calls."""
    from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_proto

    encoder = BatchEncoder(producer_id="bench")
    chunks = _by_service(rows)
    spans = [_spans(chunk) for chunk in chunks]
    fields = [name for name, _default, _optional in FIELDS]
    return {
        "avro_batch": [(encoder.encode_batch(chunk), len(chunk)) for chunk in chunks],
        "avro_single": [(encoder.encode_call(row), 1) for row in rows],
        "otlp_proto": [(encode_proto(s).SerializeToString(), len(s)) for s in spans],
        "otlp_json": [(encode_json(s).to_json().encode(), len(s)) for s in spans],
        "json": [(json.dumps([{k: row[k] for k in fields if k in row} for row in chunk]).encode(), len(chunk))
                 for chunk in chunks],
    }


def _decode_us(decode_all: Callable[[Sequence[bytes], int], Any], records: Sequence[tuple[bytes, int]]) -> float:
    """Microseconds per call, the records decoded in groups as the calls agent takes them (their calls checked at
    once)."""
    now = now_ms()
    calls = sum(n for _, n in records)
    values = [value for value, _n in records]
    started = time.perf_counter()
    accepted = 0
    for group in record_groups([len(value) for value in values]):
        for columns, _refused in decode_all(values[group.start : group.stop], now):
            accepted += 0 if columns is None else len(columns)
    elapsed = time.perf_counter() - started
    if accepted != calls:
        raise RuntimeError(f"decoded {accepted} of {calls} calls")
    return elapsed / calls * 1e6


def decode_costs(rows: Sequence[dict[str, Any]], rounds: int) -> tuple[dict[str, float], str]:
    settings = ProcessorSettings()
    calls_decoder = throughput.build_decoder(settings)
    limits, v = configure.validation_limits(settings), settings.validation
    otlp = {encoding: OtlpDecoder(limits, v.max_record_bytes, encoding, configure.span_mapping(settings))
            for encoding in ("otlp_proto", "otlp_json")}
    records = encoded(rows)
    decoders = {"avro_batch": calls_decoder.decode_all, "avro_single": calls_decoder.decode_all,
                "json": calls_decoder.decode_all, "otlp_proto": otlp["otlp_proto"].decode_all,
                "otlp_json": otlp["otlp_json"].decode_all}
    samples = alternating({name: (lambda name=name: _decode_us(decoders[name], records[name]))  # type: ignore[misc]
                           for name in decoders}, rounds)
    return medians(samples), describe(samples, unit="us/call")


def run(scale: Scale, bootstrap: str | None, tag: str) -> GroupResult:
    result = GroupResult()
    decode_rows = dataset.realistic_rows(min(scale.detector_calls, 20_000))
    costs, runs = decode_costs(decode_rows, scale.rounds)
    shapes = {"avro_batch": "llm_call_batch records of <=500 calls (the SDK)",
              "avro_single": "one single-object llm_call record per call",
              "otlp_proto": "OTLP protobuf ExportTraceServiceRequest of <=500 GenAI spans",
              "otlp_json": "OTLP/JSON ExportTraceServiceRequest of <=500 GenAI spans",
              "json": "JSON arrays of <=500 llm_call objects (schema-checked per call)"}
    for name, value in costs.items():
        result.put(f"decode_us_per_call_{name}", value,
                   f"{len(decode_rows):,} calls as {shapes[name]}, bytes -> validated CallColumns; " + runs)
    if bootstrap is None:
        result.put("worker_otlp_vs_avro", None, "skipped: no Kafka broker")
        return result
    result.put("worker_otlp_vs_avro", *_worker_ratio(scale, bootstrap, tag))
    return result


def _worker_ratio(scale: Scale, bootstrap: str, tag: str) -> tuple[float | None, str]:
    rows = dataset.realistic_rows(scale.calls // 2, seed=11)
    records = encoded(rows)
    avro_topic, otlp_topic = f"{tag}-wf-avro", f"{tag}-wf-otlp"
    dataset.preload(bootstrap, avro_topic, [(b"", value, n) for value, n in records["avro_batch"]])
    dataset.preload(bootstrap, otlp_topic, [(b"", value, n) for value, n in records["otlp_proto"]])
    total = len(rows)
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        workdir = Path(tmp)

        def avro() -> float:
            return throughput.worker_run(bootstrap, avro_topic, len(records["avro_batch"]), total, tag, workdir)["eps"]

        def otlp() -> float:
            extra = {"LLMPULSE_OTLP__ENABLED": "true", "LLMPULSE_TOPIC_OTLP": otlp_topic}
            empty = f"{tag}-wf-empty-{uuid.uuid4().hex[:6]}"
            return throughput.worker_run(bootstrap, empty, len(records["otlp_proto"]), total, tag, workdir,
                                         extra_env=extra)["eps"]

        samples = alternating({"avro": avro, "otlp": otlp}, scale.rounds)  # one run a side swung 0.33-1.12
    mid = medians(samples)
    return ratio(mid["otlp"], mid["avro"]), (
        f"{total:,} calls; worker on an otlp_proto topic (records of <=500 spans) vs on llm_call_batch records; "
        + describe(samples))
