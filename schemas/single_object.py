"""Avro single-object encoding (Avro spec, "Single object encoding") with fingerprint-based resolution.

Wire format: ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
Canonical Form + the Avro binary body. No schema registry is needed: a reader knows every schema version
shipped in ``llmpulse.schemas`` and resolves the writer's version to its own reader schema (Avro schema
resolution), so a v1 reader reads v2 data and vice versa.

Every failure is a ``DecodeError`` with a stable ``code`` (for dead-letter reasons and metrics) and a message a
person can act on; nothing here raises anything else on bad bytes.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from llmpulse import schemas

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
_EMPTY64 = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO fingerprint defined by the Avro specification."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(parsed_schema: dict[str, Any]) -> bytes:
    """8-byte little-endian fingerprint of a parsed schema's Parsing Canonical Form."""
    canonical = to_parsing_canonical_form(parsed_schema).encode()
    return struct.pack("<Q", crc64_avro(canonical))


class DecodeError(ValueError):
    """Bytes that are not a readable event; ``code`` is a stable reason for dead-letter records."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SchemaCodec:
    """Encodes with one writer schema and decodes any known version of the same contract.

    Parsed schemas and fingerprints are computed once: the hot path is a dict lookup plus fastavro.
    """

    def __init__(self, name: str, version: int | None = None, *, known_up_to: int | None = None) -> None:
        """Writes ``version`` of contract ``name`` (the newest when None) and reads every shipped version, or
        only those up to ``known_up_to``: what a release that shipped that version knew (tests of upgrades)."""
        self.name = name
        self.raw = schemas.raw(name, version)  # the writer schema as JSON (announced on the schemas topic)
        self.schema = fastavro.parse_schema(self.raw)
        self.fingerprint = fingerprint(self.schema)
        self._header = MAGIC + self.fingerprint
        self._writers: dict[bytes, dict[str, Any]] = {}
        self._writers[self.fingerprint] = self.schema
        for known_name, known_version, raw in schemas.all_versions():
            if known_name == name and (known_up_to is None or known_version <= known_up_to):
                self.register_writer(raw)

    def register_writer(self, raw_schema: dict[str, Any]) -> bytes:
        """Teach the reader another writer version (e.g. a newer one from a newer producer)."""
        parsed = fastavro.parse_schema(raw_schema)
        fp = fingerprint(parsed)
        self._writers.setdefault(fp, parsed)
        return fp

    def knows(self, data: bytes) -> bool:
        """True when ``data`` is single-object encoded with a known version of this contract."""
        return data[:2] == MAGIC and data[2:HEADER_LEN] in self._writers

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        fastavro.schemaless_writer(buffer, self.schema, record)
        return buffer.getvalue()

    def writer_for(self, data: bytes) -> dict[str, Any]:
        """The writer schema a single-object-encoded payload names, or DecodeError saying why not."""
        if len(data) < HEADER_LEN:
            raise DecodeError("truncated", f"{len(data)} bytes is shorter than the 10-byte Avro header")
        if data[:2] != MAGIC:
            raise DecodeError(
                "bad_magic",
                f"not Avro single-object encoding: starts with {data[:2].hex()}, expected c301",
            )
        writer = self._writers.get(data[2:HEADER_LEN])
        if writer is None:
            raise DecodeError(
                "unknown_schema",
                f"unknown {self.name} schema fingerprint {data[2:HEADER_LEN].hex()}; "
                "upgrade llmpulse or register the writer schema",
            )
        return writer

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = self.writer_for(data)
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_LEN)
        reader = None if writer is self.schema else self.schema  # resolution only across versions
        try:
            record = fastavro.schemaless_reader(buffer, writer, reader)
        except Exception as exc:  # fastavro raises many types on corrupt bytes; all mean the same here
            raise DecodeError("corrupt_avro", f"corrupt {self.name} body: {type(exc).__name__}: {exc}") from None
        if buffer.tell() != len(data):
            raise DecodeError(
                "trailing_bytes", f"{len(data) - buffer.tell()} unread bytes after the {self.name} record"
            )
        return record  # type: ignore[return-value]
