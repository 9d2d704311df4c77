"""Compact counters: every bucket array round-trips, sparse ones as position gaps, the bitmap form still read; and
the varint form (pack_counts) that replaced them for new state."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from llmpulse.processors.core.counter_bytes import (
    _pack_array,
    decode_bucket_counts,
    encode_bucket_counts,
    encode_counts,
    pack_counts,
    pack_deltas,
    pack_listed,
    pack_varints,
    read_varint,
    unpack_counts,
    unpack_deltas,
    unpack_varints,
    unzigzag,
    varint,
    zigzag,
)


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


def _random_counts(seed: int) -> np.ndarray:
    """Counters of every shape pack_counts meets: a slot's few, sparse sketch stores, drift rings, dense ones,
    and, rarely, negative or 64-bit values."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([0, 1, 15, 40, 48, 49, 60, 173, 510, 2_244, 11_220]))
    counts = np.zeros(n, dtype=np.int32 if seed % 3 == 0 else np.int64)
    if n:
        k = int(rng.integers(0, n + 1)) if seed % 4 else int(rng.integers(0, 60))
        kind = seed % 6
        if kind == 0:
            counts[rng.integers(0, n, k)] = 1
        elif kind == 1:
            counts[rng.integers(0, n, k)] = rng.integers(1, 300, k)
        elif kind == 2:
            counts[:] = rng.integers(0, 3, n)
        elif kind == 3:
            counts[rng.integers(0, n, k)] = rng.integers(-1_000, 1_000, k)
        elif kind == 4 and counts.dtype == np.int64:
            counts[rng.integers(0, n, k)] = rng.choice([1, 2, 200, 70_000, 2**62, -(2**63), 2**63 - 1], k)
        else:
            counts[rng.integers(0, n, k)] = rng.integers(1, 5, k)
    return counts


@pytest.mark.parametrize("seed", range(120))
def test_varint_counts_round_trip_and_python_and_numpy_write_the_same_bytes(seed: int) -> None:
    counts = _random_counts(seed)
    blob = pack_counts(counts)
    decoded, end = unpack_counts(blob + b"next", 0)
    np.testing.assert_array_equal(decoded, counts)
    assert end == len(blob)
    where = np.flatnonzero(counts)
    listed = pack_listed(counts.size, where.tolist(), counts[where].tolist())
    assert listed == blob  # the plain-Python path (a slot's few counters) and numpy's agree byte for byte
    if where.size:
        assert _pack_array(counts.size, where, counts[where], counts != 0) == blob


def test_varint_counts_cost_a_byte_per_small_count() -> None:
    slot = np.zeros(15, dtype=np.int64)  # a traffic slot of one call: requests, priced, tokens, cost
    slot[[0, 7, 8, 9]] = [1, 2_000, 1, 600]
    assert len(pack_counts(slot)) == 1 + 2 + 1 + 2 + 1 + 2  # header, bitmap, the four values
    store = np.zeros(173, dtype=np.int64)  # a sketch store of 16 values, one per bucket
    store[np.sort(np.random.default_rng(1).choice(173, 16, replace=False))] = 1
    assert len(pack_counts(store)) <= 2 + 1 + 16 + 2  # header, total, one gap per value (a few of two bytes)
    ring = np.zeros(11_220, dtype=np.int32)  # a drift ring holding 400 values, a quarter of them twice
    ring[np.random.default_rng(2).choice(11_220, 320, replace=False)] = np.r_[np.full(80, 2), np.ones(240)]
    assert len(pack_counts(ring)) <= 3 + 2 + 400 + 60 < len(encode_bucket_counts(ring)) * 0.6
    assert len(pack_counts(np.zeros(11_220, dtype=np.int32))) == 3 + 1


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16_383, 16_384, 2**35, 2**63 - 1, 2**64 - 1])
def test_varints_round_trip(value: int) -> None:
    assert read_varint(varint(value), 0) == (value, len(varint(value)))
    values = np.array([value, 5, value], dtype=np.uint64)
    decoded, end = unpack_varints(pack_varints(values) + b"\x80", 0, 3)
    assert decoded.tolist() == [value, 5, value] and end == 2 * len(varint(value)) + 1
    many = np.full(60, value, dtype=np.uint64)  # past the few long values that are spliced in Python
    assert unpack_varints(pack_varints(many), 0, 60)[0].tolist() == [value] * 60
    if value < 2**62:
        assert unzigzag(zigzag(-value)) == -value and unzigzag(zigzag(value)) == value


def test_garbage_varint_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        unpack_varints(b"\xff" * 10 + b"\x01", 0, 1)  # longer than 64 bits
    with pytest.raises(ValueError):
        unpack_varints(b"\x81\x82", 0, 2)  # cut short
    gaps_beyond = varint(4 << 3 | 2) + varint(1) + varint(9) + varint(1)  # a counter at position 9 of 4
    with pytest.raises(ValueError):
        unpack_counts(gaps_beyond)


def test_deltas_round_trip_close_values_in_a_byte_or_two() -> None:
    """Timestamps of a record's calls, out of order now and then, and the extremes of int64."""
    times = 1_796_649_864_136 + np.cumsum(np.random.default_rng(5).integers(-40, 120, 5_000))
    blob = pack_deltas(times)
    decoded, end = unpack_deltas(blob + b"next", 0, times.size)
    np.testing.assert_array_equal(decoded, times)
    assert end == len(blob)
    assert len(blob) < 2 * times.size  # the first value takes 6 bytes, each later one 1 or 2
    for edge in ([], [0], [-(1 << 63), (1 << 63) - 1, 0, -1]):
        values = np.array(edge, dtype=np.int64)
        np.testing.assert_array_equal(unpack_deltas(pack_deltas(values), 0, values.size)[0], values)
    with pytest.raises(ValueError):
        unpack_deltas(blob[:-1], 0, times.size)
