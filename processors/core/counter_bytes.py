"""Integer counters as compact bytes: the narrowest little-endian width, and a bitmap for sparse bucket arrays.

Shared by every state that persists histograms or sketches (latency sketches, drift bins and means).
"""

from __future__ import annotations

import struct

import numpy as np

_COUNTS_HEADER = struct.Struct("<BI")  # width code, number of counters
# Width codes for encode_counts: unsigned in the narrowest width that holds the largest count, else int64.
_WIDTHS: tuple[np.dtype, ...] = tuple(
    np.dtype(t).newbyteorder("<") for t in (np.uint8, np.uint16, np.uint32, np.uint64, np.int64)
)


def encode_counts(counts: np.ndarray) -> bytes:
    """Integer counters as a width code, a length and the values in the narrowest little-endian type."""
    flat = np.asarray(counts, dtype=np.int64).ravel()
    if flat.size and int(flat.min()) < 0:
        code = 4
    else:
        top = int(flat.max()) if flat.size else 0
        code = next(i for i, bits in enumerate((8, 16, 32, 64)) if top < 1 << bits)
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
    """Bucket counters as their length, a bitmap of the non-zero ones and those values (encode_counts).

    Sparse slots (few values spread over many buckets) cost about 1 bit per empty bucket instead of a byte.
    """
    flat = np.asarray(counts, dtype=np.int64).ravel()
    present = flat != 0
    return struct.pack("<I", flat.size) + np.packbits(present).tobytes() + encode_counts(flat[present])


def decode_bucket_counts(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of encode_bucket_counts: (int64 counters, offset just past them)."""
    (n,) = struct.unpack_from("<I", buf, offset)
    offset += 4
    n_bitmap = (n + 7) // 8
    bitmap = np.frombuffer(buf, dtype=np.uint8, count=n_bitmap, offset=offset)
    present = np.unpackbits(bitmap, count=n).astype(bool)
    values, end = decode_counts(buf, offset + n_bitmap)
    if values.size != int(np.count_nonzero(present)):
        raise ValueError("bucket bitmap and values disagree")
    counts = np.zeros(n, dtype=np.int64)
    counts[present] = values
    return counts, end
