"""The columnar batch contract agrees with the row contract, the packer's layout tables and the docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from llmpulse import schemas
from llmpulse.processors.core.columns import STATUSES
from llmpulse.producers.batching import DICTIONARY, NULLABLE_STRINGS, PACKED, STATUS_SYMBOLS

_ENVELOPE = ("producer_id", "count")
_DTYPE_OF_TYPECODE = {"q": "int64", "d": "float64", "i": "int32", "B": "uint8"}
_NULLABLE_STRING_ARRAY = ["null", {"type": "array", "items": ["null", "string"]}]
_DOCS = Path(__file__).resolve().parents[3] / "docs"


def _fields(name: str) -> dict[str, dict[str, Any]]:
    return {spec["name"]: spec for spec in schemas.raw(name)["fields"]}


CALL = _fields(schemas.LLM_CALL)
BATCH = _fields(schemas.LLM_CALL_BATCH)


def _optional(spec: dict[str, Any]) -> bool:
    return isinstance(spec["type"], list) and "null" in spec["type"]


def test_batch_columns_mirror_call_fields_one_to_one_in_order() -> None:
    columns = [name for name in BATCH if name not in _ENVELOPE]
    assert columns == list(CALL)
    assert list(BATCH)[: len(_ENVELOPE)] == list(_ENVELOPE)


def test_layout_tables_partition_the_batch_columns() -> None:
    groups = [set(PACKED), set(DICTIONARY), set(NULLABLE_STRINGS), {"event_id", "labels"}]
    union = set().union(*groups)
    assert sum(len(g) for g in groups) == len(union), "a column is in two layout tables"
    assert union == set(BATCH) - set(_ENVELOPE)


@pytest.mark.parametrize("name", list(PACKED))
def test_packed_columns_are_bytes_with_the_documented_dtype(name: str) -> None:
    spec = BATCH[name]
    assert spec["type"] == "bytes"
    typecode, _missing = PACKED[name]
    assert spec["doc"].startswith(f"{_DTYPE_OF_TYPECODE[typecode]} little-endian x count")


@pytest.mark.parametrize("name", [n for n in PACKED if _optional(CALL[n])])
def test_optional_numbers_document_their_absent_sentinel(name: str) -> None:
    _typecode, missing = PACKED[name]
    sentinel = "NaN" if missing != missing else str(missing)
    assert f"{sentinel} when absent" in BATCH[name]["doc"]


@pytest.mark.parametrize("name", [n for n in PACKED if not _optional(CALL[n]) and "default" in CALL[n]])
def test_packed_fill_value_equals_the_row_default(name: str) -> None:
    # A call that leaves the field out must read the same from a batch as from a single llm_call record.
    assert PACKED[name][1] == CALL[name]["default"]


@pytest.mark.parametrize("name", DICTIONARY)
def test_dictionary_columns_are_string_columns_of_string_fields(name: str) -> None:
    batch_type = BATCH[name]["type"]
    assert batch_type == "StringColumn" or batch_type["name"] == "StringColumn"
    assert CALL[name]["type"] in ("string", ["null", "string"])


@pytest.mark.parametrize("name", NULLABLE_STRINGS)
def test_nullable_string_columns_are_arrays_of_optional_strings(name: str) -> None:
    assert BATCH[name]["type"] == _NULLABLE_STRING_ARRAY
    assert BATCH[name]["default"] is None
    assert CALL[name]["type"] == ["null", "string"]


def test_event_id_and_labels_columns() -> None:
    assert BATCH["event_id"]["type"] == {"type": "array", "items": "string"}
    assert CALL["event_id"]["type"] == "string"
    assert BATCH["labels"]["type"] == ["null", {"type": "array", "items": CALL["labels"]["type"]}]


def test_status_symbols_agree_everywhere() -> None:
    enum = CALL["status"]["type"]
    assert tuple(enum["symbols"]) == STATUS_SYMBOLS == STATUSES


def test_status_code_doc_matches_the_symbols() -> None:
    documented = dict(re.findall(r"(\w+)=(\d+)", BATCH["status"]["doc"]))
    assert {name: int(code) for name, code in documented.items()} == {s: i for i, s in enumerate(STATUS_SYMBOLS)}


def test_metrics_catalogue_lists_exactly_the_status_symbols() -> None:
    line = next(
        line for line in (_DOCS / "metrics.md").read_text().splitlines() if "`llmpulse_llm_requests_total`" in line
    )
    listed = re.findall(r"`(\w+)`", line.split("status is one of", 1)[1])
    assert tuple(listed) == STATUS_SYMBOLS


def test_every_schema_file_name_matches_its_record() -> None:
    # The loader keys contracts by file name; the record name is what the fingerprint covers.
    for name, version, raw in schemas.all_versions():
        assert raw["type"] == "record"
        assert raw["namespace"] == "io.llmpulse"
        assert raw["name"].lower() == name.replace("_", ""), (name, version)


def test_unknown_names_and_versions_are_explained() -> None:
    with pytest.raises(KeyError, match="known: alert"):
        schemas.raw("no_such_contract")
    with pytest.raises(KeyError, match=r"has no version 99; known: \[1, 2\]"):
        schemas.raw(schemas.LLM_CALL, 99)
