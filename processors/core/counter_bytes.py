"""Integer counters as compact bytes: the narrowest little-endian width, and for sparse bucket arrays a bitmap
or, when fewer bytes, the gaps between the non-zero positions.

Shared by every state that persists histograms or sketches (latency sketches, drift bins and means).
"""

from __future__ import annotations

import struct

import numpy as np

_COUNTS_HEADER = struct.Struct("<BI")  # width code, number of counters
_LENGTH = struct.Struct("<I")
_FEW = 32  # up to this many counters, encode_counts finds their range in Python
_POSITIONS = 1 << 31  # flag in encode_bucket_counts' length: position gaps follow instead of a bitmap
# Width codes for encode_counts: unsigned in the narrowest width that holds the largest count, else int64.
_WIDTHS: tuple[np.dtype, ...] = tuple(
    np.dtype(t).newbyteorder("<") for t in (np.uint8, np.uint16, np.uint32, np.uint64, np.int64)
)


def encode_counts(counts: np.ndarray) -> bytes:
    """Integer counters as a width code, a length and the values in the narrowest little-endian type."""
    flat = np.asarray(counts, dtype=np.int64).ravel()
    if not flat.size:
        return _COUNTS_HEADER.pack(0, 0)
    if flat.size <= _FEW:  # a slot's few counters: Python's min and max beat two numpy reductions
        listed = flat.tolist()
        low, top = min(listed), max(listed)
    else:
        low, top = int(flat.min()), int(flat.max())
    code = 4 if low < 0 else 0 if top < 1 << 8 else 1 if top < 1 << 16 else 2 if top < 1 << 32 else 3
    return _COUNTS_HEADER.pack(code, flat.size) + flat.astype(_WIDTHS[code]).tobytes()


def decode_counts(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of encode_counts: (int64 counters, offset just past them)."""
    code, n = _COUNTS_HEADER.unpack_from(buf, offset)
    if code >= len(_WIDTHS):
        raise ValueError(f"unknown counter width code {code}")
    offset += _COUNTS_HEADER.size
    dtype = _WIDTHS[code]
    counts = np.frombuffer(buf, dtype=dtype, count=n, offset=offset).astype(np.int64)
    return counts, offset + n * dtype.itemsize


def encode_bucket_counts(counts: np.ndarray) -> bytes:
    """Bucket counters as their length, where the non-zero ones are and their values (encode_counts).

    Where: a bitmap (about 1 bit per empty bucket instead of a byte), or, when that takes fewer bytes (a few
    values over many buckets, e.g. a drift ring of 11,110 bins), the gaps between their positions (encode_counts),
    flagged by the length's top bit.
    """
    flat = np.asarray(counts, dtype=np.int64).ravel()
    if flat.size >= _POSITIONS:
        raise ValueError("too many counters")
    present = flat != 0
    where = np.flatnonzero(present)
    values = encode_counts(flat[where])
    bitmap_bytes = (flat.size + 7) // 8
    if _COUNTS_HEADER.size + where.size < bitmap_bytes:  # gaps can be shorter than the bitmap (1+ byte each)
        gaps = where.copy()
        gaps[1:] -= where[:-1]
        encoded_gaps = encode_counts(gaps)
        if len(encoded_gaps) < bitmap_bytes:
            return _LENGTH.pack(flat.size | _POSITIONS) + encoded_gaps + values
    return _LENGTH.pack(flat.size) + np.packbits(present).tobytes() + values


def decode_bucket_counts(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of encode_bucket_counts: (int64 counters, offset just past them)."""
    (n,) = _LENGTH.unpack_from(buf, offset)
    offset += _LENGTH.size
    if n & _POSITIONS:
        n &= ~_POSITIONS
        gaps, offset = decode_counts(buf, offset)
        where = np.cumsum(gaps)
        if where.size and (int(gaps[1:].min(initial=1)) < 1 or int(where[0]) < 0 or int(where[-1]) >= n):
            raise ValueError("bucket positions out of range")
    else:
        n_bitmap = (n + 7) // 8
        bitmap = np.frombuffer(buf, dtype=np.uint8, count=n_bitmap, offset=offset)
        where = np.flatnonzero(np.unpackbits(bitmap, count=n))
        offset += n_bitmap
    values, end = decode_counts(buf, offset)
    if values.size != where.size:
        raise ValueError("bucket positions and values disagree")
    counts = np.zeros(n, dtype=np.int64)
    counts[where] = values
    return counts, end
