"""Single-object codec: round trips, CRC-64-AVRO fingerprints against published vectors, evolution, bad bytes."""

from __future__ import annotations

import copy
import io
import struct
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse import schemas
from llmpulse.schemas.single_object import HEADER_LEN, MAGIC, DecodeError, SchemaCodec, crc64_avro, fingerprint

_PRIMITIVE_SAMPLES: dict[str, Any] = {
    "string": "text-é",  # non-ASCII on purpose: strings are UTF-8 on the wire
    "long": -1_700_000_000_123,
    "int": -42,
    "double": 0.1,
    "float": 0.5,
    "boolean": True,
    "bytes": b"\x00\xff\xc3\x01",
}


def _sample(schema: Any, named: dict[str, Any], full: bool) -> Any:
    """A value of ``schema``: every optional filled when ``full``, else the null branch of every union."""
    if isinstance(schema, str):
        return _PRIMITIVE_SAMPLES[schema] if schema in _PRIMITIVE_SAMPLES else _sample(named[schema], named, full)
    if isinstance(schema, list):
        branch = next((b for b in schema if b != "null"), "null") if full else schema[0]
        return None if branch == "null" else _sample(branch, named, full)
    kind = schema["type"]
    if kind in ("record", "enum"):
        named[schema["name"]] = schema
        named[f"{schema.get('namespace', 'io.llmpulse')}.{schema['name']}"] = schema
    if kind == "record":
        return {f["name"]: _sample(f["type"], named, full) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][-1]  # the last symbol: index 0 would also be what a zeroed body decodes to
    if kind == "array":
        return [_sample(schema["items"], named, full) for _ in range(2)]
    if kind == "map":
        return {"k1": _sample(schema["values"], named, full), "k2": _sample(schema["values"], named, full)}
    return _sample(kind, named, full)


def _crc64_bitwise(data: bytes) -> int:
    """CRC-64-AVRO straight from the Avro spec's definition, one bit at a time (no table)."""
    poly = 0xC15D213AA4D7A795
    fp = poly  # the spec's EMPTY is the polynomial itself
    for byte in data:
        fp ^= byte
        for _ in range(8):
            fp = (fp >> 1) ^ (poly if fp & 1 else 0)
    return fp


def _v2_llm_call() -> dict[str, Any]:
    """llm_call v1 plus one optional field, the kind of change a minor release ships."""
    raw = copy.deepcopy(schemas.raw(schemas.LLM_CALL, 1))
    raw["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    return raw


def _single_object(parsed: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(MAGIC + fingerprint(parsed))
    fastavro.schemaless_writer(buffer, parsed, record)
    return buffer.getvalue()


ALL = [(name, version) for name, version, _ in schemas.all_versions()]


def test_every_contract_ships() -> None:
    names = {name for name, _ in ALL}
    assert names == {"llm_call", "llm_call_batch", "alert", "incident", "dead_letter", "alert_command",
                     "provider_state", "feedback", "model_route", "budget_state"}


@pytest.mark.parametrize("full", [True, False], ids=["all-fields", "nulls"])
@pytest.mark.parametrize(("name", "version"), ALL, ids=[f"{n}.v{v}" for n, v in ALL])
def test_round_trip_every_schema(name: str, version: int, full: bool) -> None:
    codec = SchemaCodec(name, version)
    record = _sample(schemas.raw(name, version), {}, full)
    data = codec.encode(record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:HEADER_LEN] == codec.fingerprint
    assert codec.knows(data)
    assert codec.decode(data) == record


@pytest.mark.parametrize(
    ("canonical", "expected"),
    [
        # Vectors published with the Avro reference implementations (Ruby/Go test suites).
        ('"int"', 0x7275D51A3F395C8F),
        ('"string"', 0x8F014872634503C7),
    ],
)
def test_crc64_matches_published_vectors(canonical: str, expected: int) -> None:
    assert crc64_avro(canonical.encode()) == expected
    assert _crc64_bitwise(canonical.encode()) == expected


def test_int_schema_header_matches_the_spec_example() -> None:
    header = MAGIC + fingerprint(fastavro.parse_schema("int"))
    assert list(header) == [0xC3, 0x01, 0x8F, 0x5C, 0x39, 0x3F, 0x1A, 0xD5, 0x75, 0x72]


@pytest.mark.parametrize(("name", "version"), ALL, ids=[f"{n}.v{v}" for n, v in ALL])
def test_fingerprint_is_crc64_of_the_canonical_form(name: str, version: int) -> None:
    codec = SchemaCodec(name, version)
    canonical = to_parsing_canonical_form(codec.schema)
    assert codec.fingerprint == struct.pack("<Q", _crc64_bitwise(canonical.encode()))
    # fastavro documents its CRC-64-AVRO digest as the little-endian bytes, the Java implementation's order.
    assert codec.fingerprint.hex() == fastavro_fingerprint(canonical, "CRC-64-AVRO")


def test_docs_and_defaults_do_not_change_the_fingerprint() -> None:
    raw = copy.deepcopy(schemas.raw(schemas.LLM_CALL))
    for field in raw["fields"]:
        field["doc"] = "reworded"
    assert fingerprint(fastavro.parse_schema(raw)) == SchemaCodec(schemas.LLM_CALL).fingerprint


def test_distinct_contracts_have_distinct_fingerprints() -> None:
    prints = {SchemaCodec(name, version).fingerprint for name, version in ALL}
    assert len(prints) == len(ALL)


def test_v1_reader_reads_v2_bytes_once_the_writer_is_registered() -> None:
    reader = SchemaCodec(schemas.LLM_CALL, 1)
    v2 = fastavro.parse_schema(_v2_llm_call())
    record = _sample(_v2_llm_call(), {}, full=True)
    assert record["region"] is not None
    data = _single_object(v2, record)
    with pytest.raises(DecodeError) as unknown:
        reader.decode(data)
    assert unknown.value.code == "unknown_schema"
    assert fingerprint(v2).hex() in str(unknown.value)

    assert reader.register_writer(_v2_llm_call()) == fingerprint(v2)
    decoded = reader.decode(data)
    expected = {k: v for k, v in record.items() if k != "region"}
    assert decoded == expected


def test_v2_reader_reads_v1_bytes_with_the_new_field_defaulted() -> None:
    v1_codec = SchemaCodec(schemas.LLM_CALL, 1)
    record = _sample(schemas.raw(schemas.LLM_CALL, 1), {}, full=True)
    data = v1_codec.encode(record)
    v2 = fastavro.parse_schema(_v2_llm_call())
    writer = v1_codec.writer_for(data)  # the v1 schema, found by the fingerprint in the header
    decoded = fastavro.schemaless_reader(io.BytesIO(data[HEADER_LEN:]), writer, v2)
    assert decoded == {**record, "region": None}


def _call_bytes() -> tuple[SchemaCodec, bytes]:
    codec = SchemaCodec(schemas.LLM_CALL)
    return codec, codec.encode(_sample(schemas.raw(schemas.LLM_CALL), {}, full=True))


def _code_of(codec: SchemaCodec, data: bytes) -> str:
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    return err.value.code


def test_truncated_body_is_corrupt_avro() -> None:
    codec, data = _call_bytes()
    for cut in (1, 7, len(data) // 2, len(data) - HEADER_LEN - 1):
        assert _code_of(codec, data[:-cut]) == "corrupt_avro", cut


def test_short_header_is_truncated() -> None:
    codec, data = _call_bytes()
    assert _code_of(codec, data[:9]) == "truncated"
    assert _code_of(codec, b"") == "truncated"


def test_bad_magic() -> None:
    codec, data = _call_bytes()
    assert _code_of(codec, b"\x00\x01" + data[2:]) == "bad_magic"
    assert _code_of(codec, b'{"event_id": "json, not avro"}') == "bad_magic"


def test_unknown_fingerprint() -> None:
    codec, data = _call_bytes()
    assert _code_of(codec, MAGIC + b"\x00" * 8 + data[HEADER_LEN:]) == "unknown_schema"
    # Another contract's bytes are not an llm_call either.
    alert = SchemaCodec(schemas.ALERT)
    assert _code_of(codec, alert.encode(_sample(schemas.raw(schemas.ALERT), {}, full=True))) == "unknown_schema"


def test_trailing_bytes() -> None:
    codec, data = _call_bytes()
    with pytest.raises(DecodeError) as err:
        codec.decode(data + b"\x00\x00\x00")
    assert err.value.code == "trailing_bytes"
    assert "3 unread bytes" in str(err.value)


def test_decode_error_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    assert issubclass(DecodeError, ValueError)


_CODES = {"truncated", "bad_magic", "unknown_schema", "corrupt_avro", "trailing_bytes"}


@settings(max_examples=300, deadline=None)
@given(
    contract=st.sampled_from([schemas.LLM_CALL, schemas.LLM_CALL_BATCH]),
    body=st.binary(max_size=300),
    header=st.sampled_from(["none", "magic", "known"]),
)
def test_random_bytes_only_ever_raise_decode_error(contract: str, body: bytes, header: str) -> None:
    codec = SchemaCodec(contract)
    prefix = {"none": b"", "magic": MAGIC, "known": MAGIC + codec.fingerprint}[header]
    try:
        codec.decode(prefix + body)
    except DecodeError as exc:
        assert exc.code in _CODES


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=HEADER_LEN, max_value=10_000), value=st.integers(0, 255))
def test_flipped_body_byte_never_escapes_as_another_exception(position: int, value: int) -> None:
    codec, data = _call_bytes()
    position = HEADER_LEN + (position - HEADER_LEN) % (len(data) - HEADER_LEN)
    corrupted = data[:position] + bytes([value]) + data[position + 1 :]
    try:
        codec.decode(corrupted)
    except DecodeError as exc:
        assert exc.code in {"corrupt_avro", "trailing_bytes"}
