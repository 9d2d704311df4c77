"""Fixtures for fault-injection tests: real workers on their own topics, exact priced traffic, topic reads.

Every test here is bounded by a timeout (its module's, else the layer's in tests/conftest.py); every worker a
test starts is stopped after it, however the test ended.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from llmpulse.producers.batching import BatchEncoder, new_event_id
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

# A SIGKILLed member holds its partitions until its session expires: keep that short so restarts are quick.
FAST_GROUP_ENV = {"BROKER_SESSION_TIMEOUT": "8", "BROKER_HEARTBEAT_INTERVAL": "1"}


# ---- workers ---------------------------------------------------------------------------------------------


@pytest.fixture
def workers(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``make(app_id=None, start=True, fast_restart=False, **env)``: a worker on its own topics (the fleet
    topic included); pass another worker's ``app_id`` to join its group; ``fast_restart`` shortens the
    consumer session so a SIGKILLed member's partitions move on within seconds."""
    started: list[WorkerProcess] = []

    def make(app_id: str | None = None, start: bool = True, fast_restart: bool = False,
             **extra_env: str) -> WorkerProcess:
        env = {**FAST_GROUP_ENV, **extra_env} if fast_restart else dict(extra_env)
        worker = WorkerProcess(kafka_bootstrap, tmp_path / f"w{len(started)}", extra_env=env)
        if app_id is not None:
            worker.app_id = app_id
        worker.extra_env.setdefault("LLMPULSE_TOPIC_FLEET", f"fleet-{worker.app_id}")
        started.append(worker)
        return worker.start(timeout=90) if start else worker

    yield make
    for worker in started:
        worker.stop()


# ---- priced traffic with exact expectations -------------------------------------------------------------


@dataclass
class PricedTraffic:
    """Batches of calls with explicit integer costs; remembers the exact sum per scope and key.

    Every call carries the same event time (``event_ms``) so every sum lands in one hour/day/month bucket,
    whatever the wall clock does while the test runs. Users belong to one service each, so user spend is
    exact per partition.
    """

    bootstrap: str
    topic: str
    services: int = 5
    users: int = 200
    seed: int = 7
    event_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    expected: dict[str, Counter[str]] = field(default_factory=lambda: {s: Counter() for s in SCOPES})
    calls: int = 0
    transactional: bool = False  # each produce() call is one Kafka transaction (its commit marker takes an offset)

    def __post_init__(self) -> None:
        self.delivery_errors: list[str] = []
        self._rng = random.Random(self.seed)
        self._encoder = BatchEncoder(producer_id=f"reliability-{uuid.uuid4().hex[:6]}")
        config = {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                  "compression.type": "lz4"}
        if self.transactional:
            config["transactional.id"] = f"reliability-{uuid.uuid4().hex[:8]}"
        self._producer = Producer(config)
        if self.transactional:
            self._producer.init_transactions(30)

    def service_of(self, user: int) -> str:
        return f"svc-{user % self.services}"

    def batch(self, size: int) -> tuple[str, bytes]:
        """One service's batch of ``size`` calls (key, encoded value); expectations updated."""
        service = self._rng.randrange(self.services)
        users = [u for u in range(self.users) if u % self.services == service]
        rows: list[dict[str, Any]] = []
        for _ in range(size):
            user, cost = self._rng.choice(users), self._rng.randint(1, 5000)
            model = self._rng.choice(MODELS)
            rows.append({
                "event_id": new_event_id(), "timestamp_ms": self.event_ms, "service": f"svc-{service}",
                "provider": "openai", "request_model": model, "status": "ok",
                "latency_ms": 50.0 + self._rng.random() * 100, "input_tokens": 100, "output_tokens": 20,
                "cost_micros": cost, "user_hash": f"user-{user}",
            })
            for scope, key in (("global", "all"), ("service", f"svc-{service}"), ("user", f"user-{user}"),
                               ("model", model)):
                self.expected[scope][key] += cost
        self.calls += size
        return f"svc-{service}", self._encoder.encode_batch(rows)

    def produce(self, batches: int, size: int = 500) -> None:
        if self.transactional:
            self._producer.begin_transaction()
        for _ in range(batches):
            key, value = self.batch(size)
            self._produce(key, value)
        if self.transactional:
            self._producer.commit_transaction(30)
        self._producer.poll(0)

    def trickle(self, batches: int, size: int = 500, pause_s: float = 0.05) -> None:
        """``batches`` batches one at a time, ``pause_s`` apart (calls that keep arriving while workers come,
        go or freeze), then flush."""
        for _ in range(batches):
            self.produce(1, size)
            time.sleep(pause_s)
        self.flush()

    def _produce(self, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key=key.encode(), on_delivery=self._delivered)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None:  # expectations already count this batch: a failed delivery must fail the test
            self.delivery_errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        assert self._producer.flush(timeout) == 0, "traffic was not delivered to the broker"
        assert not self.delivery_errors, f"the broker refused traffic: {self.delivery_errors[:3]}"


SCOPES = ("global", "service", "user", "model")
MODELS = ("gpt-4o-mini", "gpt-4o")


@pytest.fixture
def priced_traffic(kafka_bootstrap: str) -> Callable[..., PricedTraffic]:
    return lambda topic, **options: PricedTraffic(kafka_bootstrap, topic, **options)


FLEET_SCOPES = ("global", "model")  # kept by the fleet ledger alone; service and user by the partitions' ledgers


def spend_by_scope(views: list[dict[str, Any]], period: str = "day") -> dict[str, Counter[str]]:
    """Union of /api/budgets answers: fleet ledgers (global, model) and partition ledgers (service, user). The
    fleet ledger also mirrors service and user spend for the budget-state topic; the partitions' count here."""
    out: dict[str, Counter[str]] = {s: Counter() for s in SCOPES}
    for view in views:
        fleet = [row for row in view.get("fleet") or [] if row["scope"] in FLEET_SCOPES]
        partitions = [row for rows in view.get("partitions", {}).values() for row in rows
                      if row["scope"] not in FLEET_SCOPES]
        for row in fleet + partitions:
            if row["period"] == period:
                out[row["scope"]][row["key"]] += int(row["spent_micros"])
    return out


@pytest.fixture
def budgets() -> Callable[..., dict[str, Counter[str]]]:
    """``budgets(*workers)``: exact spend per scope/key summed over the workers' ledgers (day period)."""

    def read(*members: WorkerProcess, period: str = "day") -> dict[str, Counter[str]]:
        views = []
        for worker in members:
            status, body = worker.get("/api/budgets")
            if status != 200:
                raise AssertionError(f"/api/budgets answered {status}: {body}")
            views.append(body)
        return spend_by_scope(views, period)

    return read


# ---- reading topics and lag -------------------------------------------------------------------------------


def end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    """Each partition of ``topic`` and its log-end offset."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}


def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every (partition, key, value) of ``topic`` up to its current end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.message.max.bytes": 16 * 1024 * 1024})
    out: list[tuple[int, bytes | None, bytes | None]] = []
    try:
        ends = end_offsets(consumer, topic)
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(error)
                if error is None:
                    out.append((message.partition(), message.key(), message.value()))
                if message.offset() is not None and message.offset() + (error is None) >= ends[message.partition()]:
                    todo.discard(message.partition())
        assert not todo, f"{topic}: partitions {sorted(todo)} not read to their end within {timeout} s"
    finally:
        consumer.close()
    return out


@pytest.fixture
def topic_reader(kafka_bootstrap: str) -> Callable[..., list[tuple[int, bytes | None, bytes | None]]]:
    return lambda topic, timeout=30.0: read_all(kafka_bootstrap, topic, timeout)


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` the consumer group has not yet committed (a partition never committed counts fully)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lag-{uuid.uuid4().hex[:8]}"})
    try:
        ends = {(t, p): end for t in topics for p, end in end_offsets(probe, t).items()}
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in ends])]
        committed = admin.list_consumer_group_offsets(request)[group].result(10).topic_partitions
        return sum(ends[(tp.topic, tp.partition)] - max(tp.offset, 0) for tp in committed)
    finally:
        probe.close()


def commit_to_end(bootstrap: str, group: str, topic: str) -> int:
    """Commit ``group``'s offsets on every partition of ``topic`` to its end, as if everything was processed;
    returns how many records that skips. The group must have no live member."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    skipped = group_lag(bootstrap, group, [topic])
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"end-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = [TopicPartition(topic, p, end) for p, end in end_offsets(probe, topic).items()]
    finally:
        probe.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])[group].result(10)
    return skipped


@pytest.fixture
def commit_ahead(kafka_bootstrap: str) -> Callable[[WorkerProcess], int]:
    """Commit a stopped worker's calls offsets to the topic's end (what faust's gap bookkeeping can do to
    records still buffered when the worker is killed); returns the records the commit skips."""
    return lambda worker: commit_to_end(kafka_bootstrap, worker.app_id, worker.topic("calls"))


@pytest.fixture
def lag_of(kafka_bootstrap: str) -> Callable[[WorkerProcess], int]:
    """Uncommitted records of a worker's calls and fleet topics in its consumer group."""

    def lag(worker: WorkerProcess) -> int:
        return group_lag(kafka_bootstrap, worker.app_id, [worker.topic("calls"), worker.env["LLMPULSE_TOPIC_FLEET"]])

    return lag


@pytest.fixture
def waiter() -> Callable[..., Any]:
    return wait_until


# ---- alerts ---------------------------------------------------------------------------------------------------


def double_firings(records: list[dict[str, Any]]) -> list[str]:
    """What breaks "one firing per incident": a fingerprint firing under two alert ids, or repeats of one
    (alert_id, status, severity) that are not identical. Escalations (same id, higher severity) are fine."""
    problems: list[str] = []
    ids: dict[str, set[str]] = {}
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in records:
        if record["status"] == "firing":
            ids.setdefault(record["fingerprint"], set()).add(record["alert_id"])
        key = (record["alert_id"], record["status"], record["severity"])
        if key in seen and seen[key] != record:
            problems.append(f"{key} repeated with different content: {seen[key]} != {record}")
        seen.setdefault(key, record)
    problems += [f"fingerprint {fp} fired as {sorted(alert_ids)}" for fp, alert_ids in ids.items()
                 if len(alert_ids) > 1]
    return problems


def alerts_topic_records(bootstrap: str, kind: str) -> Callable[[WorkerProcess], list[dict[str, Any]]]:
    """Reads every record of ``kind`` ("alert" or "incident") on a worker's alerts topic, decoded, in topic order."""
    from llmpulse.schemas.alerts_topic import AlertsTopicCodec

    codec = AlertsTopicCodec()
    return lambda worker: [record for k, record in (codec.decode(v) for _, _, v in
                                                    read_all(bootstrap, worker.topic("alerts")) if v)
                           if k == kind]


@pytest.fixture
def alerts_of(kafka_bootstrap: str) -> Callable[[WorkerProcess], list[dict[str, Any]]]:
    """Every alert record on a worker's alerts topic, decoded (incident records are read by ``incidents_of``)."""
    return alerts_topic_records(kafka_bootstrap, "alert")


@pytest.fixture
def incidents_of(kafka_bootstrap: str) -> Callable[[WorkerProcess], list[dict[str, Any]]]:
    """Every incident record on a worker's alerts topic, decoded, in topic order."""
    return alerts_topic_records(kafka_bootstrap, "incident")


@pytest.fixture
def firing_problems() -> Callable[[list[dict[str, Any]]], list[str]]:
    return double_firings
