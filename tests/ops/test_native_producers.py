"""Producers in other languages: examples/java-producer (Apache Avro's BinaryMessageEncoder, the Kafka Java client)
and examples/node-producer (avsc, kafkajs), built from their own sources, against the real broker and a real worker.

Their bytes must be exactly what llmpulse's own encoder writes for the same record: Apache Avro is the reference
implementation of single-object encoding, so where they disagree, ours is the one to fix.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest

from llmpulse import schemas
from llmpulse.schemas.single_object import HEADER_LEN, SchemaCodec, fingerprint
from tests.support.native_producers import (
    JAVA_PROJECT,
    NODE_PROJECT,
    PRODUCERS,
    SCHEMAS,
    java_producer,
    node_producer,
)
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

SUPPORT = Path(__file__).parents[1] / "support"

# The producers pin version 1 of both contracts; readers resolve it to whatever version they were built with.
CODECS = {"call": SchemaCodec(schemas.LLM_CALL, 1), "batch": SchemaCodec(schemas.LLM_CALL_BATCH, 1)}
NODE_FINGERPRINTS = """
const fs = require('fs'), path = require('path'), avro = require('avsc');
const { fingerprint } = require('./src/llmpulse');
for (const file of process.argv.slice(1)) {
  const type = avro.Type.forSchema(JSON.parse(fs.readFileSync(file, 'utf8')));
  console.log(`${path.basename(file)} ${fingerprint(type).toString('hex')}`);
}
"""


@pytest.fixture(scope="module", params=sorted(PRODUCERS))
def producer(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    """A language and the command that runs its producer, built if its inputs changed."""
    return request.param, PRODUCERS[request.param]()


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for every language: each test counts its own service."""
    worker = WorkerProcess(kafka_bootstrap, tmp_path_factory.mktemp("native-worker")).start()
    yield worker
    worker.stop()


def _run(command: list[str], *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def _dry_run(command: list[str], calls: int, batches: int, batch_size: int) -> list[tuple[str, bytes]]:
    out = _run(command, "--dry-run", "--calls", str(calls), "--batches", str(batches), "--batch-size", str(batch_size))
    return [(kind, bytes.fromhex(value)) for kind, value in (line.split() for line in out.splitlines())]


def test_records_are_byte_identical_to_ours(producer: tuple[str, list[str]]) -> None:
    """Each record decodes, and our encoder writes the decoded record back to the very same bytes: same
    fingerprint in the header, same body (unions, nulls, maps, non-ASCII text, NaN in packed columns)."""
    records = _dry_run(producer[1], calls=12, batches=2, batch_size=40)
    assert [kind for kind, _ in records] == ["call"] * 12 + ["batch"] * 2
    for kind, data in records:
        codec = CODECS[kind]
        assert data[2:HEADER_LEN] == codec.fingerprint, (kind, data[:HEADER_LEN].hex())
        record = codec.decode(data)
        assert codec.encode(record) == data, kind
        if kind == "batch":
            assert record["count"] == 40 and len(set(record["event_id"])) == 40
    calls = [CODECS["call"].decode(data) for kind, data in records if kind == "call"]
    assert {c["status"] for c in calls} == {"ok", "rate_limited"}
    assert any(c["labels"] for c in calls) and any(c["ttft_ms"] is None for c in calls)
    assert "résumé-summary" in {c["feature"] for c in calls}


def test_fingerprints_of_every_contract_match_avro_and_avsc() -> None:
    """Apache Avro (SchemaNormalization) and avsc's canonical form give our fingerprint for every .avsc shipped."""
    files = sorted(SCHEMAS.glob("*.avsc"))
    ours = {path.name: fingerprint(fastavro.parse_schema(json.loads(path.read_text()))).hex()
            for path in files}
    java = java_producer()[0]  # built first: its target/lib holds Avro's jars
    printed = _run([java, "-cp", str(JAVA_PROJECT / "target" / "lib" / "*"), str(SUPPORT / "Fingerprints.java")],
                   *map(str, files))
    assert dict(line.split() for line in printed.splitlines()) == ours
    node = node_producer()[0]
    printed = _run([node, "-e", NODE_FINGERPRINTS], *map(str, files), cwd=NODE_PROJECT)
    assert dict(line.split() for line in printed.splitlines()) == ours


def test_the_worker_counts_every_call(producer: tuple[str, list[str]], worker: WorkerProcess) -> None:
    """N single calls and M batches of K: the worker counts N + M*K calls for that service, and refuses none."""
    language, command = producer
    service = f"{language}-checkout"
    _run(command, "--service", service, "--calls", "7", "--batches", "3", "--batch-size", "50",
         env=worker.env)
    expected = 7 + 3 * 50

    def counted() -> float:
        return worker.metric("llmpulse_llm_requests_total", service=service)

    assert wait_until(lambda: counted() == expected, 30, step=0.3), (counted(), worker.log_tail())
    assert worker.metric("llmpulse_dead_letter_total") == 0
    rate_limited = worker.metric("llmpulse_llm_requests_total", service=service, status="rate_limited")
    assert rate_limited == len(range(0, expected, 11))  # every 11th call, singles and batched alike
