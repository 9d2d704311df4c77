"""OTLP/HTTP -> a real OpenTelemetry Collector -> Kafka -> a real worker: its counters equal the GenAI calls sent.

The Collector is built by scripts/install-ops-tools.sh (otelcol-llmpulse: the otlp receiver, memory_limiter, batch
and the contrib kafka exporter) and runs deploy/otel-collector/config.yaml with only what a test must change:
loopback ports, the test's topic, the encoding under test and no internal metrics port. The spans are real
OpenTelemetry SDK spans with the GenAI attributes the official instrumentations set, sent as the SDK's OTLP/HTTP
exporters send them: the real encoders' bytes POSTed to /v1/traces, protobuf and JSON.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as encode_json
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.support.deploy import REPO
from tests.support.servers import Server, stop_server
from tests.support.tools import require_tool
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess, free_port

pytestmark = pytest.mark.timeout(180)

COLLECTOR_CONFIG = REPO / "deploy" / "otel-collector" / "config.yaml"
# model, input tokens, output tokens, error.type: one GenAI span each
CALLS = [("gpt-4o-mini", 120, 30, None), ("gpt-4o-mini", 80, 12, None), ("gpt-4o", 400, 90, None),
         ("gpt-4o", 10, 0, "RateLimitError"), ("text-embedding-3-small", 64, 0, None)]


def collector_config(path: Path, http_port: int, topic: str, encoding: str) -> Path:
    """deploy/otel-collector/config.yaml on loopback ports, writing ``encoding`` to ``topic``."""
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    protocols["http"]["endpoint"] = f"127.0.0.1:{http_port}"
    protocols["grpc"]["endpoint"] = f"127.0.0.1:{free_port()}"
    config["exporters"]["kafka"]["traces"].update(topic=topic, encoding=encoding)
    config["service"]["telemetry"] = {"metrics": {"level": "none"}}  # else it listens on :8888
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def start_collector(exe: str, workdir: Path, bootstrap: str, topic: str, encoding: str) -> Server:
    """The Collector on ``collector_config``; ready once an empty export is accepted."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = collector_config(workdir / "config.yaml", port, topic, encoding)
    log = workdir / "collector.log"
    process = subprocess.Popen([exe, f"--config=file:{config}"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               cwd=workdir, env={**os.environ, "KAFKA_BROKERS": bootstrap})
    server = Server(f"http://127.0.0.1:{port}", log, process)
    ready = wait_until(lambda: process.poll() is not None
                       or post(server.url + "/v1/traces", b"", "application/x-protobuf") == 200, 30, step=0.2)
    if not ready or process.poll() is not None:
        stop_server(server)
        raise RuntimeError(f"collector not ready (exit {process.poll()}):\n{server.log_tail()}")
    return server


def genai_spans(service: str) -> list[ReadableSpan]:
    """One SDK span per entry of CALLS, inside a plain HTTP-handler span, as the GenAI instrumentations record them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("POST /checkout"):
        for model, input_tokens, output_tokens, error in CALLS:
            operation = "embeddings" if "embedding" in model else "chat"
            with tracer.start_as_current_span(f"{operation} {model}") as span:
                span.set_attributes({"gen_ai.operation.name": operation, "gen_ai.provider.name": "openai",
                                     "gen_ai.request.model": model, "gen_ai.usage.input_tokens": input_tokens,
                                     "gen_ai.usage.output_tokens": output_tokens})
                if error:
                    span.set_attribute("error.type", error)
                    span.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    return list(exporter.get_finished_spans())


@pytest.fixture(scope="module")
def collector_exe() -> str:
    return require_tool("otelcol-llmpulse")


@pytest.fixture
def stack(collector_exe: str, kafka_bootstrap: str, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[tuple[WorkerProcess, Server]]:
    """A worker reading the OTLP topic in ``request.param``'s encoding, and a Collector writing it there."""
    encoding = request.param
    topic = f"otlp-{uuid.uuid4().hex[:8]}"
    # The worker first: it creates the topic with the calls topic's partition count.
    worker = WorkerProcess(kafka_bootstrap, tmp_path / "worker", extra_env={
        "LLMPULSE_OTLP__ENABLED": "true", "LLMPULSE_OTLP__ENCODING": encoding, "LLMPULSE_TOPIC_OTLP": topic}).start()
    try:
        collector = start_collector(collector_exe, tmp_path / "collector", kafka_bootstrap, topic, encoding)
    except Exception:
        worker.stop()
        raise
    yield worker, collector
    stop_server(collector)
    worker.stop()


@pytest.mark.parametrize("stack", ["otlp_proto", "otlp_json"], indirect=True)
def test_spans_sent_to_the_collector_are_counted_by_the_worker(stack: tuple[WorkerProcess, Server]) -> None:
    worker, collector = stack
    service = f"shop-{uuid.uuid4().hex[:6]}"
    spans = genai_spans(service)
    assert len(spans) == len(CALLS) + 1
    # The SDK's own OTLP/HTTP exporter (protobuf), and a JSON body from its JSON encoder (an exporter in another
    # language may send JSON); the Collector re-batches both into Kafka records.
    exporter = OTLPSpanExporter(endpoint=collector.url + "/v1/traces", timeout=10)
    assert exporter.export(spans[:3]) == SpanExportResult.SUCCESS, collector.log_tail()
    exporter.shutdown()
    assert post(collector.url + "/v1/traces", encode_json(spans[3:]).to_json().encode(),
                "application/json") == 200, collector.log_tail()

    def metric(name: str, **labels: str) -> float:
        return worker.metric(name, service=service, **labels)

    counted = wait_until(lambda: metric("llmpulse_llm_requests_total") >= len(CALLS), 60, step=0.3)
    assert counted, f"{worker.log_tail()}\n--- collector ---\n{collector.log_tail()}"
    expected: dict[str, Any] = {
        "calls": len(CALLS), "rate_limited": sum(1 for *_, error in CALLS if error),
        "input": sum(c[1] for c in CALLS), "output": sum(c[2] for c in CALLS)}
    assert {"calls": metric("llmpulse_llm_requests_total"),
            "rate_limited": metric("llmpulse_llm_requests_total", status="rate_limited"),
            "input": metric("llmpulse_llm_tokens_total", type="input"),
            "output": metric("llmpulse_llm_tokens_total", type="output")} == expected
    assert worker.metric("llmpulse_otlp_spans_skipped_total", reason="not_genai") == 1  # the HTTP handler span
    assert worker.metric("llmpulse_dead_letter_total") == 0
    _, api = worker.get("/api/metrics")
    assert {row["model"] for row in api["series"] if row["service"] == service} == {c[0] for c in CALLS}
