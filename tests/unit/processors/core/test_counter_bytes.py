"""Compact counters: every bucket array round-trips, sparse ones as position gaps, the bitmap form still read."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from llmpulse.processors.core.counter_bytes import decode_bucket_counts, encode_bucket_counts, encode_counts


def _bitmap_form(counts: np.ndarray) -> bytes:
    """The only form before position gaps: length, bitmap of the non-zero counters, their values."""
    present = counts != 0
    return struct.pack("<I", counts.size) + np.packbits(present).tobytes() + encode_counts(counts[present])


@pytest.mark.parametrize("seed", range(20))
def test_bucket_counts_round_trip_in_the_smaller_form_and_the_bitmap_form_is_still_read(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 12_000))
    counts = np.zeros(n, dtype=np.int64)
    if n:
        k = int(rng.integers(0, 80))
        counts[rng.integers(0, n, k)] = rng.integers(1, 10 ** int(rng.integers(1, 12)), k)
        if seed % 5 == 0:
            counts[:] = rng.integers(0, 3, n)  # dense
    blob = encode_bucket_counts(counts)
    decoded, end = decode_bucket_counts(blob + b"next", 0)
    np.testing.assert_array_equal(decoded, counts)
    assert end == len(blob)
    assert len(blob) <= len(_bitmap_form(counts))
    np.testing.assert_array_equal(decode_bucket_counts(_bitmap_form(counts))[0], counts)


def test_a_few_counts_over_many_buckets_cost_bytes_per_count_not_bits_per_bucket() -> None:
    counts = np.zeros(11_110, dtype=np.int64)  # a drift ring: 5 looks x 22 size classes x 101 bins
    counts[[3, 500, 4_000, 11_000]] = [1, 2, 1, 7]
    assert len(encode_bucket_counts(counts)) <= 4 + 5 + 4 * 2 + 5 + 4  # vs 1,389 bytes of bitmap alone
