"""Reading the Confluent Schema Registry wire format on the calls topic (producers/registry.py writes it).

``0x00`` + 4-byte big-endian schema id + Avro body. The writer schema is fetched from the registry by id
once and cached (ids are immutable); the body is then read with Avro schema resolution into our own reader
schema of the same contract, so the record has exactly the shape the single-object path produces and takes
the same columnar route (decode.py). Ids the registry does not know, and schemas that are not an llmpulse call
contract, are refused with a reason; a registry that cannot be reached refuses records as
``registry_unavailable`` (their bytes stay on the dead-letter topic for replay) and is asked again after
``retry_s`` rather than on every record.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import fastavro

from llmpulse import schemas
from llmpulse.producers.registry import WIRE_HEADER, WIRE_MAGIC, SchemaRegistry, full_name, registry_client
from llmpulse.schemas.single_object import DecodeError

_CONTRACTS = (schemas.LLM_CALL_BATCH, schemas.LLM_CALL)


def is_registry_framed(data: bytes) -> bool:
    return data[:1] == bytes([WIRE_MAGIC])


class RegistryDecoder:
    """Writer schemas by id (cached), decoded into the newest local reader schema of the same contract."""

    def __init__(self, registry: SchemaRegistry, retry_s: float = 5.0, max_schemas: int = 1024,
                 version: int | None = None) -> None:
        self.registry = registry
        self.retry_s = retry_s
        self.max_schemas = max_schemas
        # ``version`` pins the reader schemas (the newest when None), as CallDecoder's does.
        self._readers = {full_name(schemas.raw(name)): (name, fastavro.parse_schema(schemas.raw(name, version)))
                         for name in _CONTRACTS}
        self._writers: dict[int, tuple[str, dict[str, Any]]] = {}
        self._refused: dict[int, tuple[float, DecodeError]] = {}

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(contract name, record) of one framed payload, or DecodeError with a stable code."""
        if len(data) <= WIRE_HEADER.size:
            raise DecodeError("truncated", f"{len(data)} bytes is too short for the schema registry framing")
        _magic, schema_id = WIRE_HEADER.unpack_from(data, 0)
        name, writer = self._writer(schema_id)
        reader = self._readers[full_name(schemas.raw(name))][1]
        buffer = io.BytesIO(data)
        buffer.seek(WIRE_HEADER.size)
        try:
            record = fastavro.schemaless_reader(buffer, writer, reader)
        except Exception as exc:  # fastavro raises many types on corrupt bytes; all mean the same here
            raise DecodeError("corrupt_avro", f"corrupt {name} body (schema id {schema_id}): "
                                              f"{type(exc).__name__}: {exc}") from None
        if buffer.tell() != len(data):
            raise DecodeError("trailing_bytes", f"{len(data) - buffer.tell()} unread bytes after the {name} record")
        return name, record  # type: ignore[return-value]

    def _writer(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        known = self._writers.get(schema_id)
        if known is not None:
            return known
        refused = self._refused.get(schema_id)
        if refused is not None and time.monotonic() - refused[0] < self.retry_s:
            raise refused[1]
        try:
            found = self._fetch(schema_id)
        except DecodeError as exc:
            self._refused[schema_id] = (time.monotonic(), exc)
            raise
        if len(self._writers) >= self.max_schemas:  # garbage ids cannot grow the cache without bound
            self._writers.pop(next(iter(self._writers)))
        self._writers[schema_id] = found
        self._refused.pop(schema_id, None)
        return found

    def _fetch(self, schema_id: int) -> tuple[str, dict[str, Any]]:
        try:
            schema = self.registry.get_schema(schema_id)
        except Exception as exc:
            if getattr(exc, "http_status_code", None) == 404:
                raise DecodeError("unknown_schema", f"the schema registry has no schema id {schema_id}") from None
            raise DecodeError("registry_unavailable",
                              f"cannot fetch schema id {schema_id} from the schema registry: {exc}") from None
        try:
            raw = json.loads(schema.schema_str)
            name = full_name(raw)
            parsed = fastavro.parse_schema(raw)
        except Exception as exc:
            raise DecodeError("unknown_schema", f"schema id {schema_id} is not a readable Avro record: {exc}") from None
        contract = self._readers.get(name)
        if contract is None:
            raise DecodeError("unknown_schema", f"schema id {schema_id} is {name}, not an llmpulse call contract")
        return contract[0], parsed


def registry_decoder(url: str | None, basic_auth: str | None = None) -> RegistryDecoder | None:
    """The worker's decoder for registry-framed records; None when no registry URL is configured."""
    return RegistryDecoder(registry_client(url, basic_auth)) if url else None
