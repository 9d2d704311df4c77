"""Reproduces docs/design.md's layout table: decode cost per call of three ways to put 500 calls in a record.

* ``rowwise``: an Avro array of ``llm_call`` records;
* ``arrays``: columnar, one Avro array per field (optional fields are unions per element);
* ``packed`` (chosen, ``llm_call_batch``): numbers as packed little-endian buffers, repeated strings
  dictionary-encoded.

Two figures per layout: the Avro decode alone, and decode plus conversion to numpy columns (what the worker
needs). Same 500 realistic calls for all three; ``python -m bench.batch_layout`` prints the table.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np

from bench import dataset
from bench.common import GroupResult, Scale, alternating, medians
from llmpulse import schemas
from llmpulse.processors.wire.calls import to_call_columns
from llmpulse.producers.batching import FIELDS, BatchEncoder
from llmpulse.schemas.single_object import SchemaCodec

CALLS = 500
NUMERIC = ("timestamp_ms", "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "cached_tokens",
           "cost_micros", "confidence", "prompt_chars", "response_chars")


def _call_schema() -> dict[str, Any]:
    return schemas.raw(schemas.LLM_CALL)


def rowwise_schema() -> Any:
    return fastavro.parse_schema({"type": "record", "name": "RowBatch", "namespace": "bench",
                                  "fields": [{"name": "calls", "type": {"type": "array", "items": _call_schema()}}]})


def arrays_schema() -> Any:
    fields = []
    for spec in _call_schema()["fields"]:
        item = spec["type"]
        if isinstance(item, dict) and item.get("type") == "enum":
            item = {**item, "name": f"{item['name']}Column"}
        fields.append({"name": spec["name"], "type": {"type": "array", "items": item}})
    return fastavro.parse_schema({"type": "record", "name": "ArrayBatch", "namespace": "bench", "fields": fields})


def full_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{name: row.get(name, default) for name, default, _ in FIELDS} for row in rows]


def _write(schema: Any, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def _read(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), schema)


def _rows_to_columns(calls: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """What a worker must do with row-wise records before any vectorised step: one pass per field."""
    columns = {name: np.array([call[name] for call in calls], dtype=np.float64) for name in NUMERIC[:3]}
    for name in NUMERIC[3:]:
        columns[name] = np.array([call[name] if call[name] is not None else -1 for call in calls])
    for name in ("service", "provider", "request_model", "status", "user_hash", "prompt_text"):
        column = np.empty(len(calls), dtype=object)
        column[:] = [call[name] for call in calls]
        columns[name] = column
    return columns


def _arrays_to_columns(record: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    columns = {name: np.array([v if v is not None else np.nan for v in record[name]], dtype=np.float64)
               for name in NUMERIC}
    for name in ("service", "provider", "request_model", "status", "user_hash", "prompt_text"):
        column = np.empty(len(record[name]), dtype=object)
        column[:] = record[name]
        columns[name] = column
    return columns


def decoders(rows: list[dict[str, Any]]) -> dict[str, Callable[[], Any]]:
    """Name -> a function decoding the same 500 calls once in that layout."""
    complete = full_rows(rows)
    row_schema, array_schema = rowwise_schema(), arrays_schema()
    row_bytes = _write(row_schema, {"calls": complete})
    array_bytes = _write(array_schema, {spec[0]: [call[spec[0]] for call in complete] for spec in FIELDS})
    codec = SchemaCodec(schemas.LLM_CALL_BATCH)
    packed_bytes = BatchEncoder(producer_id="bench").encode_batch(rows)
    return {
        "rowwise": lambda: _read(row_schema, row_bytes),
        "rowwise_columns": lambda: _rows_to_columns(_read(row_schema, row_bytes)["calls"]),
        "arrays": lambda: _read(array_schema, array_bytes),
        "arrays_columns": lambda: _arrays_to_columns(_read(array_schema, array_bytes)),
        "packed": lambda: codec.decode(packed_bytes),
        "packed_columns": lambda: to_call_columns(codec.decode(packed_bytes)),
    }


def us_per_call(decode: Callable[[], Any], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        decode()
    return (time.perf_counter() - started) / (repeats * CALLS) * 1e6


def run(scale: Scale, repeats: int = 100) -> GroupResult:
    rows = dataset.realistic_rows(CALLS, seed=17)
    timed = {name: (lambda f=f: us_per_call(f, repeats)) for name, f in decoders(rows).items()}
    mid = medians(alternating(timed, scale.rounds))
    result = GroupResult()
    note = f"{CALLS} realistic calls (10% with text), {repeats} decodes per run"
    for name, value in mid.items():
        result.put(f"layout_{name}_us_per_call", value, note if name == "rowwise" else "")
    result.put("layout_rowwise_vs_packed_columns", mid["rowwise_columns"] / mid["packed_columns"],
               "decode-to-numpy cost, row-wise / chosen layout")
    return result


def main() -> None:
    from bench.common import QUICK

    figures = run(QUICK).figures
    print(f"{'layout':<32}{'us per call':>12}")
    for key, value in figures.items():
        print(f"{key:<32}{value:>12.2f}")


if __name__ == "__main__":
    main()
