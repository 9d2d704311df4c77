"""Kafka record bytes -> CallColumns, plus the refused parts with reasons (never an exception).

Accepts every shape on the calls topic: ``llm_call_batch`` (what the SDK writes), single ``llm_call``
records (other languages, hand-written producers), both also in the Schema Registry framing, and JSON (one
``llm_call`` object or an array of them, json_calls.py). Single and JSON calls are packed into the batch layout,
so all take the same vectorised path: packed numbers become arrays with ``np.frombuffer`` and dictionary-encoded
strings with one fancy-index, no per-call Python step.
"""

from __future__ import annotations

import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from llmpulse import schemas
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.validation import NAMES, Limits, find_invalid
from llmpulse.processors.wire.json_calls import JsonCalls, looks_like_json
from llmpulse.processors.wire.registry import RegistryDecoder, is_registry_framed
from llmpulse.producers.batching import (
    ADDED_IN_V2,
    DICTIONARY,
    FIELDS,
    NULLABLE_STRINGS,
    PACKED,
    STATUS_SYMBOLS,
    BatchEncoder,
)
from llmpulse.schemas.single_object import DecodeError, SchemaCodec

_DTYPES = {"q": "<i8", "d": "<f8", "i": "<i4", "B": "u1"}
_DTYPE_OF = {name: np.dtype(_DTYPES[typecode]) for name, (typecode, _fill) in PACKED.items()}
_FEW_CODES = 64  # up to this many codes, their range is checked in Python (numpy is faster from ~90)
_RENAMED = {"request_model": "model"}
CHECKED_TOGETHER_BELOW = 128  # calls: smaller records are checked together (check_all)
_IGNORED = {"prompt_chars", "response_chars", "feature_version", "response_model",
            "operation", "session_id", "trace_id", "span_id", "prompt_sha256",
            "reasoning_tokens", "tool_calls"}  # v2: kept in dead-letter payloads and exports; no detector reads them


@dataclass(frozen=True, slots=True)
class Refused:
    """Bytes the processor will not count, and why (becomes a dead-letter record)."""

    code: str
    reason: str
    payload: bytes
    batch_index: int | None = None


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A record's calls as read, before the checks of ``find_invalid`` (``check_all`` checks many records at once):
    the calls (None when none could be read), the parts refused so far, each call's dead-letter payload and its
    position in the record (None: the call's index)."""

    calls: CallColumns | None
    refused: list[Refused] = field(default_factory=list)
    payload_of: Callable[[int], bytes] | None = None
    index_of: Sequence[int] | None = None


def check_all(records: Sequence[Unchecked], limits: Limits,
              now_ms: int) -> list[tuple[CallColumns | None, list[Refused]]]:
    """Each record's accepted calls and refused parts, one ``invalid_field`` Refused per call that fails
    ``find_invalid``, whatever the wire format. The checks cost a few dozen numpy calls whatever the number of calls,
    so records of fewer than ``CHECKED_TOGETHER_BELOW`` calls (a quiet service's, a single call) are checked in one
    pass over all of their calls; larger ones alone, sparing the copy. Every check looks at one call, so each record
    gets what checking it alone gives."""
    small = [k for k, record in enumerate(records)
             if record.calls is not None and 0 < len(record.calls) < CHECKED_TOGETHER_BELOW]
    reasons: dict[int, np.ndarray] = {}
    if len(small) > 1:
        calls = CallColumns.concat([records[k].calls for k in small], coded=NAMES)  # type: ignore[misc]
        together = find_invalid(calls, limits, now_ms)
        ends = np.cumsum([len(records[k].calls) for k in small]).tolist()  # type: ignore[arg-type]
        reasons = {k: together[end - len(records[k].calls) : end]  # type: ignore[arg-type]
                   for k, end in zip(small, ends, strict=True)}
    return [_split(record, reasons.get(k), limits, now_ms) for k, record in enumerate(records)]


def _split(record: Unchecked, reasons: np.ndarray | None, limits: Limits,
           now_ms: int) -> tuple[CallColumns | None, list[Refused]]:
    """A record's accepted calls and refused parts, given its calls' ``find_invalid`` reasons (found here if None)."""
    calls = record.calls
    if calls is None or not len(calls):
        return None, record.refused
    if reasons is None:
        reasons = find_invalid(calls, limits, now_ms)
    bad = reasons != None  # noqa: E711  (element-wise on an object array)
    invalid = []
    if bad.any():
        assert record.payload_of is not None
        index_of = record.index_of
        invalid = [Refused("invalid_field", str(reasons[i]), record.payload_of(i),
                           i if index_of is None else index_of[i]) for i in np.flatnonzero(bad).tolist()]
        calls = calls.take(~bad) if not bad.all() else None
    if record.refused:
        return calls, sorted(record.refused + invalid, key=lambda item: item.batch_index or 0)
    return calls, invalid


class RecordReader(ABC):
    """A wire format's reader: ``read`` takes one record apart, ``decode_all`` checks the calls of many at once."""

    limits: Limits

    @abstractmethod
    def read(self, data: bytes) -> Unchecked: ...

    def decode_all(self, values: Sequence[bytes], now_ms: int) -> list[tuple[CallColumns | None, list[Refused]]]:
        """(accepted calls or None, refused parts) per record, in order (never an exception)."""
        return check_all([self.read(data) for data in values], self.limits, now_ms)

    def decode(self, data: bytes, now_ms: int) -> tuple[CallColumns | None, list[Refused]]:
        return self.decode_all([data], now_ms)[0]


class CallDecoder(RecordReader):
    """Stateless apart from the parsed schemas, which are built once per worker.

    ``version`` pins the reader contract version and the versions known without a registry (the newest and all
    shipped when None): a decoder pinned to 1 reads as a worker released with v1 did (tests of upgrades)."""

    def __init__(self, limits: Limits, max_record_bytes: int, max_calls_per_batch: int,
                 registry: RegistryDecoder | None = None, version: int | None = None) -> None:
        self.limits = limits
        self.registry = registry  # reads the Confluent Schema Registry framing when a registry is configured
        self.max_record_bytes = max_record_bytes
        self.max_calls_per_batch = max_calls_per_batch
        self.batch_codec = SchemaCodec(schemas.LLM_CALL_BATCH, version, known_up_to=version)
        self.call_codec = SchemaCodec(schemas.LLM_CALL, version, known_up_to=version)
        self._packer = BatchEncoder(producer_id="llmpulse-processor")
        self._json = JsonCalls(max_calls_per_batch)

    def decode_all(self, values: Sequence[bytes], now_ms: int) -> list[tuple[CallColumns | None, list[Refused]]]:
        """As ``RecordReader.decode_all``; the Avro records among ``values`` are made columns together
        (``columns_of``), each record's calls a range of them, so a run of them is one range again (no copy)."""
        read: list[Unchecked | None] = []
        batches: list[tuple[int, dict[str, Any]]] = []  # position in values, the decoded record
        for k, data in enumerate(values):
            record = self._record_or_refused(data)
            if isinstance(record, Unchecked):
                read.append(record)
            else:
                batches.append((k, record))
                read.append(None)  # its calls come below, once the group's columns are made
        if batches:
            whole, start = columns_of([record for _, record in batches]), 0
            for k, record in batches:
                end = start + record["count"]
                read[k] = Unchecked(whole.rows(start, end), payload_of=partial(self._reencode, record))
                start = end
        return check_all(read, self.limits, now_ms)  # type: ignore[arg-type]

    def read(self, data: bytes) -> Unchecked:
        record = self._record_or_refused(data)
        if isinstance(record, Unchecked):
            return record
        return Unchecked(columns_of([record]), payload_of=partial(self._reencode, record))

    def _record_or_refused(self, data: bytes) -> dict[str, Any] | Unchecked:
        """A record in the batch layout, decoded and checked (an ``llm_call_batch``, or a single ``llm_call`` packed
        as a batch of one, in either framing); JSON, read on its own path (``_read_json``); or why it is refused."""
        if len(data) <= self.max_record_bytes and looks_like_json(data):
            return self._read_json(data)
        try:
            record = self._record_of(data)
            check_columns(record)
        except DecodeError as exc:
            return Unchecked(None, [Refused(exc.code, str(exc), data)])
        return record

    def _read_json(self, data: bytes) -> Unchecked:
        """JSON calls (json_calls.py): schema misfits refused one by one, the rest down the columnar path."""
        try:
            parsed = self._json.parse(data)
            calls = to_call_columns(self._packer.columns(parsed.rows)) if parsed.rows else None
        except DecodeError as exc:
            return Unchecked(None, [Refused(exc.code, str(exc), data)])
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            return Unchecked(None, [Refused("invalid_field", f"calls do not fit the columnar layout: {exc}", data)])
        refused = [Refused("invalid_field", reason, payload, position) for position, reason, payload in parsed.refused]
        rows = parsed.rows
        return Unchecked(calls, refused, lambda index: json.dumps(rows[index], default=str).encode(), parsed.positions)

    def _record_of(self, data: bytes) -> dict[str, Any]:
        if len(data) > self.max_record_bytes:
            raise DecodeError("oversized", f"record of {len(data)} bytes exceeds {self.max_record_bytes}")
        if is_registry_framed(data):
            if self.registry is None:
                raise DecodeError("unknown_schema", "schema registry framing (magic byte 0) but no "
                                                    "LLMPULSE_SCHEMA_REGISTRY_URL is configured")
            name, record = self.registry.decode(data)
            return self._checked(record) if name == schemas.LLM_CALL_BATCH else self._packed(record)
        if self.batch_codec.knows(data):
            return self._checked(self.batch_codec.decode(data))
        if self.call_codec.knows(data):
            return self._packed(self.call_codec.decode(data))
        self.call_codec.writer_for(data)  # raises the precise bad_magic / unknown_schema / truncated error
        raise DecodeError("unknown_schema", "not an llm_call or llm_call_batch record")

    def _checked(self, record: dict[str, Any]) -> dict[str, Any]:
        if not 0 < record["count"] <= self.max_calls_per_batch:
            raise DecodeError("invalid_batch", f"batch count {record['count']} not in 1..{self.max_calls_per_batch}")
        for name in ADDED_IN_V2:  # a v1 writer (or a v1 reader) has none of these: every call has the fill value
            if not record.get(name):
                typecode, fill = PACKED[name]
                record[name] = struct.pack(f"<{record['count']}{typecode}", *[fill] * record["count"])
        return record

    def _packed(self, call: dict[str, Any]) -> dict[str, Any]:
        """A single llm_call in the batch layout, so both shapes take the same columnar path."""
        try:
            return self._packer.columns([call])
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            raise DecodeError("invalid_field", f"call does not fit the columnar layout: {exc}") from None

    def _reencode(self, record: dict[str, Any], index: int) -> bytes:
        """The one refused call alone, as a single llm_call record, so it can be inspected and replayed."""
        call = row_at(record, index)
        try:
            return self.call_codec.encode(call)
        except Exception:  # a value the row schema cannot hold: keep a readable trace instead
            return repr(call).encode("utf-8", "replace")[:4096]


def _check_packed(record: dict[str, Any], name: str, count: int) -> None:
    if len(record[name]) != count * _DTYPE_OF[name].itemsize:
        raise DecodeError("invalid_batch", f"column {name} holds {len(record[name])} bytes, expected {count} values")


def _check_codes(column: dict[str, Any], name: str, count: int) -> None:
    """Every code picks a dictionary value or is -1 (none); a few are checked without numpy."""
    buffer = column["codes"]
    if len(buffer) == 4 * count:
        if count <= _FEW_CODES:
            codes = struct.unpack(f"<{count}i", buffer)
            low, top = (min(codes), max(codes)) if count else (0, -1)
        else:
            array = np.frombuffer(buffer, dtype="<i4")
            low, top = int(array.min()), int(array.max())
        if low >= -1 and top < len(column["values"]):
            return
    raise DecodeError("invalid_batch", f"column {name} has codes that do not match its dictionary")


def _check_listed(column: list[Any] | None, name: str, count: int) -> None:
    if column is not None and len(column) != count:
        raise DecodeError("invalid_batch", f"column {name} has {len(column)} values, expected {count}")


def check_columns(record: dict[str, Any]) -> None:
    """DecodeError unless every column of a decoded batch record holds ``count`` calls (the ones the detectors
    skip too: a refused call is re-encoded from all of them) and every dictionary code picks a value."""
    count = record["count"]
    for name in PACKED:
        _check_packed(record, name, count)
    for name in DICTIONARY:
        _check_codes(record[name], name, count)
    for name in (*NULLABLE_STRINGS, *(name for name in _IGNORED if name not in PACKED and name not in DICTIONARY),
                 "event_id", "labels"):
        _check_listed(record.get(name), name, count)


def columns_of(records: Sequence[dict[str, Any]]) -> CallColumns:
    """Decoded batch records that passed ``check_columns`` -> one CallColumns of all their calls, in order: each
    packed column joined and read once, each dictionary column over the union of the records' values (numbered
    as ``CallColumns.concat`` numbers them), so a group of small records costs one set of numpy calls, not one
    per record."""
    counts = [record["count"] for record in records]
    arrays: dict[str, Any] = {}
    for name in PACKED:
        if name not in _IGNORED:
            arrays[name] = np.frombuffer(b"".join([record[name] for record in records]), dtype=_DTYPE_OF[name])
    codes = {}
    for name in DICTIONARY:
        if name not in _IGNORED:
            column_name = _RENAMED.get(name, name)
            codes[column_name] = _strings([record[name] for record in records], counts)
            arrays[column_name] = codes[column_name][1][codes[column_name][0]]
    for name in (*NULLABLE_STRINGS, "event_id"):
        if name not in _IGNORED:
            arrays[name] = _nullable([record[name] for record in records], counts)
    arrays["status"] = arrays["status"].astype(np.int8)
    arrays["cache_hit"] = arrays["cache_hit"].astype(bool)
    arrays["no_answer"] = arrays["no_answer"].astype(bool)
    for name in ("input_tokens", "output_tokens", "cached_tokens"):
        arrays[name] = arrays[name].astype(np.int64)
    labelled = any(record.get("labels") for record in records)
    arrays["labels"] = ([labels for record, count in zip(records, counts, strict=True)
                         for labels in (record.get("labels") or [{}] * count)] if labelled else [])
    return CallColumns(**arrays, codes=codes)


def _strings(columns: list[dict[str, Any]], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes, values with a trailing None for code -1) of a dictionary column over several records."""
    if len(columns) == 1:
        values = np.empty(len(columns[0]["values"]) + 1, dtype=object)
        values[:-1] = columns[0]["values"]  # the extra last slot is None, which code -1 selects
        return np.frombuffer(columns[0]["codes"], dtype="<i4"), values
    position: dict[object, int] = {}
    remaps = []  # per record: its codes' numbers in the union, then -1 for its own -1
    for column in columns:
        remaps.extend([position.setdefault(value, len(position)) for value in column["values"]])
        remaps.append(-1)
    sizes = np.array([len(column["values"]) for column in columns])
    starts = np.concatenate(([0], np.cumsum(sizes + 1)[:-1]))
    own = np.frombuffer(b"".join([column["codes"] for column in columns]), dtype="<i4")
    at = np.repeat(starts, counts) + np.where(own < 0, np.repeat(sizes, counts), own)
    values = np.empty(len(position) + 1, dtype=object)
    values[:-1] = list(position)
    return np.array(remaps, dtype="<i4")[at], values


def _nullable(columns: list[list[Any] | None], counts: list[int]) -> np.ndarray:
    array = np.full(sum(counts), None, dtype=object)
    at = 0
    for column, count in zip(columns, counts, strict=True):
        if column is not None:
            array[at : at + count] = column
        at += count
    return array


def to_call_columns(record: dict[str, Any]) -> CallColumns:
    """A decoded batch record -> typed numpy arrays; DecodeError when its columns disagree in length."""
    check_columns(record)
    return columns_of([record])


def row_at(record: dict[str, Any], index: int) -> dict[str, Any]:
    """Call ``index`` of a decoded batch record as an llm_call dict (for dead-letter payloads)."""
    row: dict[str, Any] = {}
    for name, (typecode, _missing) in PACKED.items():
        size = struct.calcsize("<" + typecode)
        value = struct.unpack_from("<" + typecode, record[name], index * size)[0]
        row[name] = value
    for name in DICTIONARY:
        code = struct.unpack_from("<i", record[name]["codes"], index * 4)[0]
        row[name] = None if code < 0 else record[name]["values"][code]
    for name in (*NULLABLE_STRINGS, "event_id", "labels"):
        column = record.get(name)
        row[name] = column[index] if column is not None else None
    if row["status"] < len(STATUS_SYMBOLS):  # an unknown code stays a number; the re-encode then falls back
        row["status"] = STATUS_SYMBOLS[row["status"]]
    for name, missing in (("ttft_ms", None), ("confidence", None)):
        if row[name] != row[name]:  # NaN means absent
            row[name] = missing
    if row["cost_micros"] == -1:
        row["cost_micros"] = None
    row["cache_hit"], row["no_answer"] = bool(row["cache_hit"]), bool(row["no_answer"])
    row["labels"] = row["labels"] or {}
    return {name: row.get(name, default) for name, default, _ in FIELDS}
