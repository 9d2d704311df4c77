"""The client stack against the project's broker (Kafka 4.3.1 by default; KIP-896 dropped old protocols).

confluent-kafka (the SDK) must produce idempotently with lz4/zstd and use transactions; faust-streaming (the
processors, through aiokafka) must read those batches and forward them with exactly-once processing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

_FAUST_APP = textwrap.dedent(
    '''
    """Forward every record of $SOURCE to $SINK, keys and bytes untouched, exactly once."""
    import os

    import faust

    app = faust.App(
        os.environ["COMPAT_APP_ID"],
        broker="kafka://" + os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        processing_guarantee="exactly_once",
        web_enabled=False,
        store="memory://",
        topic_replication_factor=1,
        topic_partitions=3,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(os.environ["SOURCE"], key_serializer="raw", value_serializer="raw")
    sink = app.topic(os.environ["SINK"], key_serializer="raw", value_serializer="raw")


    @app.agent(source)
    async def forward(stream):
        async for key, value in stream.items():
            await sink.send(key=key, value=value)


    if __name__ == "__main__":
        app.main()
    '''
)


def _produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], **conf: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert not errors, errors


def _consume(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0, **conf: object
) -> list[tuple[bytes, bytes]]:
    """Read ``topic`` from the start until ``expected`` records arrived or ``timeout`` passed."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"compat-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **conf,
    })
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is None:
                    got.append((msg.key(), msg.value()))
                elif msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(msg.error())
    finally:
        consumer.close()
    return got


def _records(tag: str, n: int) -> list[tuple[bytes, bytes]]:
    # Repetitive payloads so the codecs really compress; distinct keys spread over all partitions.
    return [(f"{tag}-{i}".encode(), f"{tag}:{i}:".encode() + b"token " * 40) for i in range(n)]


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_idempotent_compressed_round_trip(kafka_bootstrap: str, fresh_topic: str, codec: str) -> None:
    sent = _records(codec, 300)
    _produce(kafka_bootstrap, fresh_topic, sent, **{"enable.idempotence": True, "compression.type": codec})

    got = _consume(kafka_bootstrap, fresh_topic, len(sent))

    assert sorted(got) == sorted(sent)


def test_transaction_abort_is_invisible_to_read_committed(kafka_bootstrap: str, fresh_topic: str) -> None:
    producer = Producer({
        "bootstrap.servers": kafka_bootstrap,
        "transactional.id": f"compat-tx-{uuid.uuid4().hex[:8]}",
        "compression.type": "zstd",
    })
    producer.init_transactions(30)
    for tag, commit in (("kept", True), ("dropped", False), ("later", True)):
        producer.begin_transaction()
        for key, value in _records(tag, 50):
            producer.produce(fresh_topic, key=key, value=value)
        if commit:
            producer.commit_transaction(30)
        else:
            assert producer.flush(30) == 0  # abort would purge unsent records; make it abort written ones
            producer.abort_transaction(30)

    committed = _consume(kafka_bootstrap, fresh_topic, 100, **{"isolation.level": "read_committed"})
    everything = _consume(kafka_bootstrap, fresh_topic, 150, **{"isolation.level": "read_uncommitted"})

    assert sorted(committed) == sorted(_records("kept", 50) + _records("later", 50))
    # The aborted batch did reach the log: only the isolation level hides it.
    assert {k for k, _ in everything} >= {k for k, _ in _records("dropped", 50)}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.mark.timeout(240)
def test_faust_exactly_once_forwards_compressed_batches(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    source, sink = topic_factory("compat-src"), topic_factory("compat-sink")
    early, late = _records("lz4", 200), _records("zstd", 200)
    # Written before the worker starts: faust must read lz4 history from the earliest offset.
    _produce(kafka_bootstrap, source, early, **{"enable.idempotence": True, "compression.type": "lz4"})

    (tmp_path / "compat_app.py").write_text(_FAUST_APP)
    log = tmp_path / "worker.log"
    env = {**os.environ, "COMPAT_APP_ID": f"compat-{uuid.uuid4().hex[:8]}", "SOURCE": source, "SINK": sink,
           "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    with log.open("wb") as out:
        # `faust worker` turns the web server back on unless told --without-web (it overrides web_enabled).
        cmd = [sys.executable, "compat_app.py", "worker", "--without-web", "--loglevel", "info"]
        worker = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = _consume(kafka_bootstrap, sink, 1, timeout=120, **{"isolation.level": "read_committed"})
        assert first, f"faust forwarded nothing within 120 s; worker log:\n{_tail(log)}"
        # Written while the worker runs: the live path, with the other codec.
        _produce(kafka_bootstrap, source, late, **{"enable.idempotence": True, "compression.type": "zstd"})
        got = _consume(kafka_bootstrap, sink, len(early) + len(late), timeout=90,
                       **{"isolation.level": "read_committed"})
        assert worker.poll() is None, f"the worker died; log:\n{_tail(log)}"
    finally:
        _stop(worker)

    assert sorted(got) == sorted(early + late), f"worker log:\n{_tail(log)}"
