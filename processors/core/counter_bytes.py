"""Integer counters as compact bytes: the narrowest little-endian width, and for sparse bucket arrays a bitmap
or, when fewer bytes, the gaps between the non-zero positions; and, written for state since (``pack_counts``), the
same ideas in varints, a byte per small count or gap.

Shared by every state that persists histograms or sketches (latency sketches, traffic slots, drift bins and means).
"""

from __future__ import annotations

import functools
import operator
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


# ---- varint counters (the second compact form) -------------------------------------------------------------------
# Unsigned LEB128: 7 bits a byte, the top bit set on every byte but a value's last, so the 1-3 calls of a slot cost
# a byte per count instead of a width code, a 4-byte length and a fixed width. Written by ``pack_counts``; the forms
# above are still read (by the callers, after their own version markers).
_DENSE, _BITMAP, _GAPS, _REPEATS = range(4)  # pack_counts forms (low 2 bits of the header)
_SIGNED = 4  # header flag: values are zigzag-coded (some counter is negative)
_HEADER_BITS = 3
_FEW_VARINTS = 48  # up to this many counters pack_counts works on Python lists, else numpy ...
_FEW_PRESENT = 24  # ... unless no more than this many are non-zero (the listed path up to ~24: 30k state
# counters of a 10k-series replay packed in 10.4 µs each against 13.9 µs at 10, medians of 7 runs side by side)
_STEPS = tuple(1 << (7 * k) for k in range(1, 10))  # a varint's byte count grows past each


def varint(value: int) -> bytes:
    """One unsigned varint (LEB128)."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | memoryview, offset: int) -> tuple[int, int]:
    """(value, offset past it) of the varint at ``offset``."""
    value = shift = 0
    while True:
        byte = buf[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def zigzag(value: int) -> int:
    """Signed -> unsigned, small magnitudes small: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ..."""
    return value * 2 if value >= 0 else -value * 2 - 1


def unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def _varints(values: list[int]) -> bytes:
    if not values or max(values) < 0x80:
        return bytes(values)
    out = bytearray()  # varint inlined: ~3.5x faster than joining a bytes object per value
    for value in values:
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _varint_bytes(values: np.ndarray, top: int) -> int:
    """Bytes of ``values`` (non-negative, the largest ``top``) as varints: one pass per byte beyond the first."""
    size = values.size
    for step in _STEPS:
        if top < step:
            break
        size += int(np.count_nonzero(values >= step))
    return size


def pack_varints(values: np.ndarray, top: int | None = None) -> bytes:
    """Non-negative integers (the largest ``top``, if known) as consecutive varints, in numpy."""
    v = np.asarray(values).ravel()
    if top is None:
        top = int(v.max()) if v.size else 0
    if top < 0x80:
        return v.astype(np.uint8).tobytes()
    big = np.flatnonzero(v >= 0x80)
    if big.size <= _FEW_VARINTS:  # the usual case: a few long ones spliced between single bytes
        single = v.astype(np.uint8).tobytes()  # (the long ones' low bytes are replaced)
        out = bytearray()
        at = 0
        for i, value in zip(big.tolist(), v[big].tolist(), strict=True):
            out += single[at:i]
            out += varint(value)
            at = i + 1
        out += single[at:]
        return bytes(out)
    v = v.astype(np.uint64)
    sizes = np.ones(v.size, dtype=np.int64)
    for step in _STEPS:
        if top < step:
            break
        sizes += v >= step
    ends = np.cumsum(sizes)
    owner = np.repeat(np.arange(v.size), sizes)
    place = np.arange(int(ends[-1])) - (ends - sizes)[owner]  # byte position within its varint
    out = (v[owner] >> (place * 7).astype(np.uint64)) & np.uint64(0x7F)
    out |= (place < sizes[owner] - 1).astype(np.uint64) << np.uint64(7)
    return out.astype(np.uint8).tobytes()


def unpack_varints(buf: bytes | memoryview, offset: int, n: int) -> tuple[np.ndarray, int]:
    """(``n`` varints as uint64, offset past them): the inverse of pack_varints."""
    if n == 0:
        return np.zeros(0, dtype=np.uint64), offset
    data = np.frombuffer(buf, dtype=np.uint8, offset=offset)
    head = data[:n]
    if head.size == n and int(head.max()) < 0x80:
        return head.astype(np.uint64), offset + n
    last = np.flatnonzero(data < 0x80)[:n]  # each value's last byte
    if last.size < n:
        raise ValueError("truncated varints")
    firsts = np.r_[0, last[:-1] + 1]
    sizes = last - firsts + 1
    if int(sizes.max()) > 10 or (int(sizes.max()) == 10 and int(data[last[sizes == 10]].max()) > 1):
        raise ValueError("varint beyond 64 bits")
    owner = np.repeat(np.arange(n), sizes)
    place = np.arange(int(last[-1]) + 1) - firsts[owner]
    parts = (data[: int(last[-1]) + 1].astype(np.uint64) & np.uint64(0x7F)) << (place * 7).astype(np.uint64)
    return np.add.reduceat(parts, firsts), offset + int(last[-1]) + 1


def pack_deltas(values: np.ndarray) -> bytes:
    """Integers as the first, then each one's difference from the one before, as zigzag varints (pack_varints):
    a byte or two each for close values, such as the timestamps of a record's calls (~1.5 bytes instead of 14
    digits and a comma in JSON)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    deltas = np.diff(v, prepend=np.int64(0))
    return pack_varints(((deltas << 1) ^ (deltas >> 63)).view(np.uint64))


def unpack_deltas(buf: bytes | memoryview, offset: int, n: int) -> tuple[np.ndarray, int]:
    """(``n`` int64 values, offset past them): the inverse of pack_deltas."""
    coded, end = unpack_varints(buf, offset, n)
    return np.cumsum(_signed(coded, True)), end


def pack_counts(counts: np.ndarray) -> bytes:
    """Integer counters as a varint header (length, form) and the fewest bytes of four forms: every counter
    (dense), a bitmap of the non-zero ones and their values, the gaps between their positions and their values,
    or, when most are 1, the positions repeated as often as their count (gaps of 0 for repeats). Exact for any
    int64 counters (negative ones zigzag-coded, never repeated). Ties go to the earlier form."""
    flat = np.asarray(counts).ravel()
    if flat.dtype.kind not in "iu":
        flat = flat.astype(np.int64)
    n = flat.size
    if n <= _FEW_VARINTS:  # a slot's counters: plain Python beats a dozen numpy calls
        listed = flat.tolist()
        where = [i for i, v in enumerate(listed) if v]
        return pack_listed(n, where, [listed[i] for i in where])
    present = flat != 0  # a pass to booleans, then theirs: faster than nonzero of integers
    where_array = np.flatnonzero(present)
    if where_array.size <= _FEW_PRESENT:
        return pack_listed(n, where_array.tolist(), flat[where_array].tolist())
    return _pack_array(n, where_array, flat[where_array], present)


def _varint_size(value: int) -> int:
    return 1 if value < 0x80 else (value.bit_length() + 6) // 7


def _choose(n: int, k: int, value_bytes: int, gap_bytes: int, total: int) -> int:
    """The form of fewest bytes (pack_counts); ``total`` < 0: repeats not allowed."""
    form, size = _DENSE, value_bytes + n - k
    for other, other_size in ((_BITMAP, (n + 7) // 8 + value_bytes),
                              (_GAPS, _varint_size(k) + gap_bytes + value_bytes)):
        if other_size < size:
            form, size = other, other_size
    if 0 <= total <= 2 * n and _varint_size(total) + gap_bytes + total - k < size:
        form = _REPEATS
    return form


def _coded(values: list[int]) -> bytes:
    """Non-negative integers as consecutive varints: one byte each, in C, when all are below 128."""
    return bytes(values) if max(values) < 0x80 else _varints(values)


def pack_listed(n: int, where: list[int], values: list[int]) -> bytes:
    """pack_counts of ``n`` counters given the positions (ascending) and values of the non-zero ones, on Python
    lists: the same bytes (pack_counts takes this path for few of them)."""
    k = len(where)
    if not k:
        return _no_counts(n)
    signed = min(values) < 0
    if signed:
        values = [zigzag(v) for v in values]
    coded = _coded(values)
    gaps = [where[0], *map(operator.sub, where[1:], where)]
    coded_gaps = _coded(gaps)
    total = -1 if signed else sum(values)
    form = _choose(n, k, len(coded), len(coded_gaps), total)
    header = varint(n << _HEADER_BITS | (_SIGNED if signed else 0) | form)
    if form == _GAPS:
        return header + varint(k) + coded_gaps + coded
    if form == _REPEATS:
        if total == k:  # every count 1: the gaps are the repeats
            return header + varint(total) + coded_gaps
        repeated = []  # each gap, then a zero gap per further count (the same position again)
        for gap, count in zip(gaps, values, strict=True):
            repeated.append(gap)
            if count > 1:
                repeated += [0] * (count - 1)
        return header + varint(total) + _varints(repeated)
    if form == _BITMAP:
        bits = bytearray((n + 7) // 8)
        for i in where:
            bits[i >> 3] |= 0x80 >> (i & 7)
        return header + bytes(bits) + coded
    dense = [0] * n
    for i, v in zip(where, values, strict=True):
        dense[i] = v
    return header + _varints(dense)


@functools.lru_cache(maxsize=64)
def _no_counts(n: int) -> bytes:
    """pack_listed of ``n`` counters all zero (asked for the same few layouts over and over)."""
    form = _choose(n, 0, 0, 0, 0)
    header = varint(n << _HEADER_BITS | form)
    if form in (_GAPS, _REPEATS):  # no positions (or no repeats) follow
        return header + varint(0)
    return header + bytes((n + 7) // 8 if form == _BITMAP else n)


def _pack_array(n: int, where: np.ndarray, values: np.ndarray, present: np.ndarray) -> bytes:
    """pack_counts of many non-zero counters, in numpy (byte for byte what pack_listed writes), with as few passes
    as it takes: positions are not looked at when no form using them can be smaller."""
    k = where.size
    unsigned = values.view(f"u{values.itemsize}") if values.dtype.kind == "i" else values
    top = int(unsigned.max())  # one pass for the largest and whether any is negative
    signed = values.dtype.kind == "i" and top >= 1 << (8 * values.itemsize - 1)
    if signed:  # zigzag in 64 bits: (v << 1) ^ (v >> 63), read as unsigned
        wide = values.astype(np.int64)
        values = ((wide << 1) ^ (wide >> 63)).view(np.uint64)
        top = int(values.max())
    value_bytes = k if top < 0x80 else _varint_bytes(values, top)
    total = (k if top == 1 else int(values.sum())) if not signed and top <= 2 * n else -1
    simplest = min(value_bytes + n - k, (n + 7) // 8 + value_bytes)  # dense or bitmap
    gaps = repeats = where
    gap_top, gap_bytes = 0, 1 << 62  # (gaps, and repeats, cost at least a byte per position)
    if 0 <= total < simplest - 1:  # repeats may be the smallest: their gaps give the plain gaps' bytes too
        positions = np.repeat(where, values) if total != k else where
        repeats = positions.copy()
        repeats[1:] -= positions[:-1]
        gap_top = int(repeats.max()) if n > 0x80 else 0  # (no gap reaches 128 in fewer counters)
        gap_bytes = (k if gap_top < 0x80 else _varint_bytes(repeats, gap_top) - (total - k))
    elif 1 + k + value_bytes < simplest:
        gaps = where.copy()
        gaps[1:] -= where[:-1]
        gap_top = int(gaps.max()) if n > 0x80 else 0
        gap_bytes = k if gap_top < 0x80 else _varint_bytes(gaps, gap_top)
    form = _choose(n, k, value_bytes, gap_bytes, total if gap_bytes < 1 << 62 else -1)
    header = varint(n << _HEADER_BITS | (_SIGNED if signed else 0) | form)
    if form == _BITMAP:
        coded = values.astype(np.uint8).tobytes() if top < 0x80 else pack_varints(values, top)
        return header + np.packbits(present).tobytes() + coded
    if form == _GAPS:
        if gaps is where:  # (measured as repeats: all counts 1 gives the same gaps)
            gaps = where.copy()
            gaps[1:] -= where[:-1]
        return header + varint(k) + pack_varints(gaps, gap_top) + pack_varints(values, top)
    if form == _REPEATS:  # each position's gap, then count - 1 zero gaps
        return header + varint(total) + (repeats.astype(np.uint8).tobytes() if gap_top < 0x80 else
                                         pack_varints(repeats, gap_top))
    dense = np.zeros(n, dtype=values.dtype)
    dense[where] = values
    return header + pack_varints(dense, top)


def unpack_counts(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Inverse of pack_counts: (int64 counters, offset just past them)."""
    header, offset = read_varint(buf, offset)
    n, form, signed = header >> _HEADER_BITS, header & 3, bool(header & _SIGNED)
    if n >= _POSITIONS:
        raise ValueError("too many counters")
    counts = np.zeros(n, dtype=np.int64)
    if form == _DENSE:
        values, offset = unpack_varints(buf, offset, n)
        return _signed(values, signed), offset
    if form == _BITMAP:
        n_bitmap = (n + 7) // 8
        bitmap = np.frombuffer(buf, dtype=np.uint8, count=n_bitmap, offset=offset)
        where = np.flatnonzero(np.unpackbits(bitmap, count=n))
        values, offset = unpack_varints(buf, offset + n_bitmap, where.size)
    elif form == _GAPS:
        k, offset = read_varint(buf, offset)
        gaps, offset = unpack_varints(buf, offset, k)
        where = np.cumsum(gaps)
    elif signed:
        raise ValueError("repeated positions of signed counters")
    else:
        total, offset = read_varint(buf, offset)
        gaps, offset = unpack_varints(buf, offset, total)
        positions = np.cumsum(gaps)
        if total and int(positions[-1]) >= n:
            raise ValueError("counter positions out of range")
        return np.bincount(positions.astype(np.int64), minlength=n).astype(np.int64), offset
    if form == _GAPS:
        values, offset = unpack_varints(buf, offset, where.size)
    if where.size and (int(where[-1]) >= n or (where.size > 1 and int(np.diff(where).min()) < 1)):
        raise ValueError("counter positions out of range")
    counts[where] = _signed(values, signed)
    return counts, offset


def _signed(values: np.ndarray, zigzagged: bool) -> np.ndarray:
    """uint64 varint values as int64: zigzag-decoded, or checked to fit."""
    if zigzagged:
        return ((values >> np.uint64(1)) ^ (np.uint64(0) - (values & np.uint64(1)))).view(np.int64)
    if values.size and int(values.max()) >= 1 << 63:
        raise ValueError("counter beyond int64")
    return values.astype(np.int64)
