"""The calls agent's groups: small records share a group (and its fixed costs), large ones stay in groups of about
the size they always had, so a group's alerts wait no longer than before."""

from __future__ import annotations

from llmpulse.processors.agents.calls import GROUP_MAX_BYTES, TAKE_MAX_RECORDS, record_groups

SMALL = 7_400  # ~40 calls: a service's record at ~10,000 series
LARGE = 80_000  # ~470 calls: a service's record at ~100 series


def _sizes_of(groups: list[range], sizes: list[int]) -> list[int]:
    return [sum(sizes[group.start : group.stop]) for group in groups]


def test_a_whole_take_of_small_records_is_one_group() -> None:
    sizes = [SMALL] * TAKE_MAX_RECORDS
    assert record_groups(sizes) == [range(0, TAKE_MAX_RECORDS)]


def test_large_records_make_groups_of_about_64_in_order() -> None:
    sizes = [LARGE] * TAKE_MAX_RECORDS
    groups = record_groups(sizes)
    assert [i for group in groups for i in group] == list(range(TAKE_MAX_RECORDS))
    assert [len(group) for group in groups] == [65, 65, 62]
    assert max(_sizes_of(groups, sizes)) <= GROUP_MAX_BYTES


def test_mixed_sizes_cut_where_the_next_record_would_not_fit_and_an_oversized_one_stands_alone() -> None:
    sizes = [SMALL, 6 << 20, SMALL, SMALL, 3 << 20, 3 << 20, 0, 0]
    assert record_groups(sizes) == [range(0, 1), range(1, 2), range(2, 5), range(5, 8)]
    assert record_groups([]) == []
