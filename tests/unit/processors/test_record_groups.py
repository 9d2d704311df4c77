"""The calls agent's groups: small records share a group (and its fixed costs), large ones stay in groups of about
the size they always had, so a group's alerts wait no longer than before."""

from __future__ import annotations

from llmpulse.processors.agents.calls import GROUP_MAX_BYTES, GROUP_RECORDS, TAKE_MAX_RECORDS, record_groups

SMALL = 7_400  # ~40 calls: a service's record at ~10,000 series
LARGE = 80_000  # ~470 calls: a service's record at ~100 series
OTLP_JSON = 330_000  # 500 spans in OTLP/JSON


def _sizes_of(groups: list[range], sizes: list[int]) -> list[int]:
    return [sum(sizes[group.start : group.stop]) for group in groups]


def test_a_whole_take_of_small_records_is_one_group() -> None:
    sizes = [SMALL] * TAKE_MAX_RECORDS
    assert record_groups(sizes) == [range(0, TAKE_MAX_RECORDS)]


def test_large_records_of_any_wire_format_make_groups_of_64_in_order() -> None:
    for size in (LARGE, OTLP_JSON):
        groups = record_groups([size] * TAKE_MAX_RECORDS)
        assert [i for group in groups for i in group] == list(range(TAKE_MAX_RECORDS))
        assert [len(group) for group in groups] == [GROUP_RECORDS] * 3


def test_a_group_grows_past_64_records_only_while_it_fits_in_its_bytes() -> None:
    sizes = [SMALL] * 64 + [GROUP_MAX_BYTES - 64 * SMALL] + [1] + [SMALL] * 10
    assert record_groups(sizes) == [range(0, 65), range(65, 76)]
    assert _sizes_of(record_groups(sizes), sizes)[0] == GROUP_MAX_BYTES
    assert record_groups([SMALL] * 3) == [range(0, 3)] and record_groups([]) == []
