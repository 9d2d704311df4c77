"""``llmpulse export`` and ``llmpulse import``: topics to JSON Lines and back.

Export writes one JSON object per line: ``llm_call`` dicts (fields of schemas/llm_call.v1.avsc, batches
unpacked) or ``alert`` records, for a time range. Import replays a JSON Lines file of calls into the calls
topic as columnar batches: ``llm_call`` lines (what export writes, or a capture of real traffic) and seed-004
telemetry lines (``{"timestamp": ISO, "model", "tokens": {...}, "cost_usd", "success", ...}``) are accepted;
a line that is neither is skipped and reported with its line number. Round trip: import then export gives
back the same calls.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from llmpulse.config import KafkaSecurity

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# Records are sought by their Kafka timestamp, which the SDK sets when it sends, a little after the calls'
# own event time; reading from a margin before --since catches every call that finished in range.
SEEK_MARGIN_MS = 15 * 60_000
KINDS = ("calls", "alerts")
IDLE_TIMEOUT_S = 15.0  # a broker that stops answering ends the export instead of hanging it


def parse_time(text: str, now_ms: int) -> int:
    """Unix ms of ``now``, an age (``90s``, ``15m``, ``1h``, ``2d``, ``1w``) or ISO 8601 (UTC when naive)."""
    text = text.strip()
    if text == "now":
        return now_ms
    match = _RELATIVE.match(text)
    if match:
        return now_ms - int(float(match[1]) * _UNIT_MS[match[2]])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither ISO 8601 nor a relative age like 1h, 30m, 2d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# ---- export -----------------------------------------------------------------------------------------------
class _Rows:
    """Topic record bytes -> JSON-ready dicts (llm_call rows, or alert and incident records with their ``kind``)."""

    def __init__(self, kind: str) -> None:
        from llmpulse import schemas
        from llmpulse.processors.wire.calls import row_at
        from llmpulse.processors.wire.registry import is_registry_framed, registry_decoder
        from llmpulse.schemas.alerts_topic import AlertsTopicCodec
        from llmpulse.schemas.single_object import SchemaCodec

        self.kind = kind
        self.alerts_topic = AlertsTopicCodec()
        self.batch = SchemaCodec(schemas.LLM_CALL_BATCH)
        self.call = SchemaCodec(schemas.LLM_CALL)
        self.row_at, self.is_framed = row_at, is_registry_framed
        registry = _registry()
        self.registry = registry_decoder(registry.get("url") or None, registry.get("auth") or None)

    def decode(self, data: bytes) -> list[dict[str, Any]]:
        if self.kind == "alerts":
            kind, record = self.alerts_topic.decode(data)
            return [{"kind": kind, **record}]
        if self.is_framed(data) and self.registry is not None:
            name, record = self.registry.decode(data)
            return self._unpack(record) if name == "llm_call_batch" else [record]
        if self.batch.knows(data):
            return self._unpack(self.batch.decode(data))
        return [self.call.decode(data)]

    def _unpack(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.row_at(record, i) for i in range(record["count"])]

    def when(self, row: dict[str, Any]) -> int:
        return int(row["updated_at_ms"] if self.kind == "alerts" else row["timestamp_ms"])


def _registry() -> dict[str, str]:
    from llmpulse.config import schema_registry_env

    return schema_registry_env()


def read_range(bootstrap: str, security: KafkaSecurity, topic: str, start_ms: int, end_ms: int) -> Iterator[bytes]:
    """Values of ``topic`` whose Kafka timestamp may hold events in [start_ms, end_ms), up to the end of the
    log as it was when reading began (a live topic does not keep the export running)."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    from llmpulse.commands.topic_reading import records_until_ends
    from llmpulse.connection import client_config

    consumer = Consumer({**client_config(bootstrap, security, "llmpulse.cli.librdkafka"),
                         "group.id": f"llmpulse-export-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise typer.BadParameter(f"topic {topic!r} does not exist on {bootstrap}", param_hint="--topic")
        partitions = sorted(metadata.partitions)
        starts = consumer.offsets_for_times([TopicPartition(topic, p, max(start_ms - SEEK_MARGIN_MS, 0))
                                             for p in partitions], timeout=10)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        wanted = [tp for tp in starts if 0 <= tp.offset < ends[tp.partition]]
        if not wanted:
            return
        consumer.assign(wanted)
        reading = {tp.partition: ends[tp.partition] for tp in wanted}
        for message in records_until_ends(consumer, topic, reading, IDLE_TIMEOUT_S):
            if message.value():
                yield message.value()
    finally:
        consumer.close()


def export(
    kind: Annotated[str, typer.Argument(help="calls (llm_call rows, batches unpacked) or alerts.")] = "calls",
    since: Annotated[str, typer.Option(help="Start: ISO 8601 or an age like 1h, 30m, 2d.")] = "1h",
    until: Annotated[str, typer.Option(help="End (exclusive): ISO 8601, an age, or now.")] = "now",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write [default: stdout].")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic [default: the configured calls or alerts topic].")] = None,
) -> None:
    """Write calls or alerts of a time range to JSON Lines."""
    from llmpulse.commands.connect import kafka_or_exit
    from llmpulse.config import Topics
    from llmpulse.schemas.single_object import DecodeError

    if kind not in KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(KINDS)}", param_hint="KIND")
    bootstrap, security = kafka_or_exit()
    now = int(time.time() * 1000)
    start, end = parse_time(since, now), parse_time(until, now)
    topics = Topics.from_env()
    topic = topic or (topics.calls if kind == "calls" else topics.alerts)
    rows = _Rows(kind)
    written = unreadable = 0
    handle: IO[str] = output.open("w", encoding="utf-8") if output is not None else sys.stdout
    try:
        for value in read_range(bootstrap, security, topic, start, end):
            try:
                decoded = rows.decode(value)
            except DecodeError:
                unreadable += 1
                continue
            for row in decoded:
                if start <= rows.when(row) < end:
                    handle.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
                    written += 1
    finally:
        if output is not None:
            handle.close()
    note = f", {unreadable} unreadable record(s) skipped" if unreadable else ""
    typer.echo(f"exported {written} {kind} from {topic}{note}", err=True)


# ---- import -----------------------------------------------------------------------------------------------
def from_seed_telemetry(row: dict[str, Any], service: str) -> dict[str, Any]:
    """A seed-004 telemetry line as an llm_call dict."""
    tokens = row.get("tokens") or {}
    meta = row.get("metadata") or {}
    stamp = datetime.fromisoformat(str(row["timestamp"]).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    cost = row.get("cost_usd")
    call = {
        "event_id": str(row.get("request_id") or "").replace("-", "") or None,
        "timestamp_ms": int(stamp.timestamp() * 1000), "service": service,
        "provider": row["provider"], "request_model": row["model"],
        "status": "ok" if row.get("success", True) else "error", "error_type": row.get("error"),
        "latency_ms": float(row["latency_ms"]), "input_tokens": int(tokens.get("input", 0)),
        "output_tokens": int(tokens.get("output", 0)),
        "cost_micros": None if cost is None else round(float(cost) * 1_000_000),
        "prompt_chars": int(row.get("prompt_length") or 0), "response_chars": int(row.get("response_length") or 0),
        "feature_version": meta.get("feature_version"), "prompt_version": meta.get("prompt_version"),
        "experiment_id": meta.get("experiment_id"), "variant": meta.get("variant_id") or meta.get("variant"),
    }
    return {k: v for k, v in call.items() if v is not None}


def normalize(row: Any, service: str) -> dict[str, Any]:
    """One JSON line as a complete llm_call dict; ValueError/KeyError/TypeError when it cannot be one."""
    from llmpulse.producers.batching import DEFAULTS, new_event_id

    if not isinstance(row, dict):
        raise TypeError("not a JSON object")
    if "request_model" not in row and "model" in row and "timestamp" in row:
        row = from_seed_telemetry(row, service)
    for name in ("timestamp_ms", "provider", "request_model", "latency_ms"):
        if row.get(name) is None:
            raise KeyError(f"missing {name}")
    call = {**DEFAULTS, "service": service, **{k: v for k, v in row.items() if k in DEFAULTS}}
    call["event_id"] = call.get("event_id") or new_event_id()
    call["labels"] = call.get("labels") or {}
    return call


FEEDBACK_VALUES = ("thumbs", "rating", "score", "correct")


def feedback_of(row: Any, service: str) -> dict[str, Any] | None:
    """A feedback line (``request_id`` and one of thumbs / rating / score / correct, no call fields) as a queued
    feedback row (producers/feedback.py); None when the line is not feedback. ValueError when it is, malformed."""
    from llmpulse.producers.feedback import feedback_row

    if not isinstance(row, dict) or "request_id" not in row or "latency_ms" in row \
            or not any(name in row for name in FEEDBACK_VALUES):
        return None
    given = {name: row.get(name) for name in FEEDBACK_VALUES}
    feedback = feedback_row(str(row["request_id"]), **given, source=str(row.get("source") or "import"),
                            service=str(row.get("service") or service), timestamp_ms=row.get("timestamp_ms"))
    if feedback is None:
        raise ValueError("feedback needs exactly one of thumbs, rating (1-5), score (0-1) or correct")
    return feedback


def _lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, bytes read so far, text) of every non-empty line."""
    read = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            read += len(raw)
            if raw.strip():
                yield number, read, raw.decode("utf-8", "replace")


def _shift(path: Path) -> int:
    """Offset that moves the file's newest call to now (first pass: timestamps only)."""
    newest = 0
    for _number, _read, text in _lines(path):
        try:
            newest = max(newest, int(normalize(json.loads(text), "x")["timestamp_ms"]))
        except (ValueError, KeyError, TypeError):
            continue
    return int(time.time() * 1000) - newest if newest else 0


def _by_service(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by service: the record key, as the SDK keys calls and feedback."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["service"], []).append(row)
    return grouped


class _Sender:
    """Encodes chunks of calls per service and produces them; counts what the broker acknowledged."""

    def __init__(self, bootstrap: str, security: KafkaSecurity, topic: str) -> None:
        from confluent_kafka import Producer

        from llmpulse.connection import client_config
        from llmpulse.producers.feedback import FeedbackEncoder
        from llmpulse.producers.registry import encoder_for

        self.topic = topic
        self.feedback_encoder = FeedbackEncoder("llmpulse-import")
        registry = _registry()
        self.encoder = encoder_for("llmpulse-import", topic, registry.get("url", ""), registry.get("auth") or None)
        self.producer = Producer({**client_config(bootstrap, security, "llmpulse.cli.librdkafka"),
                                  "enable.idempotence": True,
                                  "compression.type": "lz4", "linger.ms": 20})
        self.delivered = self.failed = 0

    def send(self, rows: list[dict[str, Any]]) -> None:
        for service, group in _by_service(rows).items():
            self._produce(service, self.encoder.encode_batch(group), len(group))

    def send_feedback(self, rows: list[dict[str, Any]]) -> None:
        """Feedback rows, on the calls topic keyed by service like their calls (as the SDK sends them)."""
        for service, group in _by_service(rows).items():
            self._produce(service, self.feedback_encoder.encode(service, group), len(group))

    def _produce(self, service: str, payload: bytes, count: int) -> None:
        while True:
            try:
                self.producer.produce(self.topic, payload, key=service.encode(),
                                      on_delivery=lambda err, _m, n=count: self._settle(err, n))
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def _settle(self, err: Any, count: int) -> None:
        if err is None:
            self.delivered += count
        else:
            self.failed += count

    def close(self, timeout: float) -> None:
        self.producer.flush(timeout)


def import_calls(
    file: Annotated[Path, typer.Argument(help="JSON Lines of llm_call dicts, seed-004 telemetry, or feedback "
                                              "({request_id, one of thumbs/rating/score/correct, source}).",
                                         exists=True, dir_okay=False, readable=True)],
    topic: Annotated[str | None, typer.Option(help="Calls topic [default: the configured one].")] = None,
    service: Annotated[str, typer.Option(help="Service for lines that name none.")] = "imported",
    batch_size: Annotated[int, typer.Option(help="Calls per Kafka record.", min=1, max=10_000)] = 500,
    shift_to_now: Annotated[bool, typer.Option(help="Move timestamps so the newest call is now.")] = False,
    redact_pii: Annotated[bool, typer.Option(help="Redact PII in prompt/response text, as the SDK does.")] = True,
) -> None:
    """Replay a JSON Lines file of calls, and feedback on them, into the calls topic, as columnar batches."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from llmpulse import pii
    from llmpulse.commands.connect import kafka_or_exit
    from llmpulse.config import Topics

    bootstrap, security = kafka_or_exit()
    offset = _shift(file) if shift_to_now else 0
    sender = _Sender(bootstrap, security, topic or Topics.from_env().calls)
    skipped: list[str] = []
    chunk: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    columns = (TextColumn("[bold]importing"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[calls]} calls"),
               TimeRemainingColumn())
    with Progress(*columns, console=_stderr_console()) as bar:
        task = bar.add_task("import", total=file.stat().st_size, calls=0)
        sent = 0
        for number, read, text in _lines(file):
            try:
                row = json.loads(text)
                verdict = feedback_of(row, service)
                if verdict is not None:
                    verdict["timestamp_ms"] += offset
                    feedback.append(verdict)
                    continue
                call = normalize(row, service)
                call["timestamp_ms"] = int(call["timestamp_ms"]) + offset
                sender.encoder.columns([call])  # a call the batch layout cannot hold fails here, alone
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                skipped.append(f"line {number}: {exc}")
                continue
            if redact_pii:
                for name in ("prompt_text", "response_text"):
                    if call.get(name):
                        call[name] = pii.redact(call[name])
            chunk.append(call)
            if len(chunk) >= batch_size:
                sender.send(chunk)
                sent += len(chunk)
                chunk = []
            bar.update(task, completed=read, calls=sent)
        if chunk:
            sender.send(chunk)
            sent += len(chunk)
        bar.update(task, completed=file.stat().st_size, calls=sent)
    sender.close(30.0)  # the calls first: feedback that arrives before its call waits for it, but why make it
    if feedback:
        for start in range(0, len(feedback), batch_size):
            sender.send_feedback(feedback[start : start + batch_size])
        sent += len(feedback)
        sender.close(30.0)
    for line in skipped[:10]:
        typer.echo(f"skipped {line}", err=True)
    lost = sent - sender.delivered
    what = f"{sent - len(feedback)} calls" + (f" and {len(feedback)} feedback" if feedback else "")
    typer.echo(f"imported {what} into {sender.topic}; {len(skipped)} line(s) skipped"
               + (f"; {lost} of them not delivered" if lost else ""), err=True)
    if lost:
        raise typer.Exit(1)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_calls)
