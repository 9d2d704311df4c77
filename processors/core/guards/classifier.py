"""Tier-2 prompt-injection detector: hashed character n-grams and words -> logistic regression, numpy only.

Featurisation is vectorised over a whole batch: texts are lower-cased, truncated, joined with NUL separators
and turned into one uint32 code-point array. A polynomial hash (mod 2**64, so numpy's wrapping uint64
arithmetic is the modulus) makes every 3-5 character n-gram (grown one character at a time) and every word (a
difference of prefix hashes) a handful of array operations instead of a Python loop per token.

Length must not leak into the score (attacks in the training data are ~8x longer than benign texts), so each
text's vector is scaled to unit norm and no length feature exists (training adds long benign texts too, see
``training.train_injection``). Texts are truncated to ``max_chars`` to bound cost; the decisive part of an
injection is almost always near its start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

_U64 = np.uint64
_BASE = 0x100000001B3  # odd, so it has an inverse mod 2**64
_BASE_INV = pow(_BASE, -1, 2**64)
_MIX = _U64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of h * _MIX are well spread
_WORD_SALT = _U64(0x5BD1E9955BD1E995)
_BIGRAM_MULT = _U64(0xC2B2AE3D27D4EB4F)


@dataclass(frozen=True, slots=True)
class HasherConfig:
    """How texts become hashed sparse vectors; stored with the weights so training and inference agree."""

    bits: int = 18
    ngram_min: int = 3
    ngram_max: int = 5
    max_chars: int = 2048
    words: bool = True


class SparseBatch(NamedTuple):
    """COO entries of an (n_docs x 2**bits) matrix, scaled to unit L2 norm per document (see featurize)."""

    doc: np.ndarray  # int64
    bucket: np.ndarray  # int64
    value: np.ndarray  # float64; a (doc, bucket) pair may repeat, its values add up
    n_docs: int
    norm: np.ndarray  # float64 per document: the value of each of its entries, 1/sqrt(its entry count)


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2**64 (cumprod on uint64 wraps, which is exactly the modulus)."""
    size = 1 << max(n - 1, 0).bit_length()  # tables come in powers of two, so a few serve every batch
    return _power_table(base, size)[:n]


@lru_cache(maxsize=8)
def _power_table(base: int, size: int) -> np.ndarray:
    out = np.full(size, base, dtype=_U64)
    out[0] = 1
    table = np.cumprod(out, dtype=_U64)
    table.flags.writeable = False  # shared between calls
    return table


# Lookup tables on code points (the last entry stands for every larger one): whitespace, and word characters
# (ASCII digits, lower-case letters and "_", and everything from U+00C0 on, as in the trained model).
_SPACE_TABLE = np.isin(np.arange(0xA2), [9, 10, 11, 12, 13, 32, 0xA0])
_WORD_TABLE = np.isin(np.arange(0xC1), [*range(48, 58), *range(97, 123), 95, 0xC0])
# The same whitespace (ASCII part) as a bytes.translate table: each of it to a space.
_ASCII_SPACES = bytes(32 if b in (9, 10, 11, 12, 13) else b for b in range(256))


def _encode(texts: Sequence[str], max_chars: int) -> np.ndarray:
    """Lower-cased, truncated texts as one code-point array (uint8 when all ASCII): NUL before, between and
    after documents."""
    # A NUL inside a text would be read as a document boundary, so it becomes a space.
    joined = "\0" + "\0".join(t[:max_chars].lower().replace("\0", " ") for t in texts) + "\0"
    if joined.isascii():  # the common case: a byte per character, whitespace made spaces by one translate
        raw = joined.encode("ascii").translate(_ASCII_SPACES)
        codes = np.frombuffer(raw, dtype=np.uint8)
        if b"  " not in raw:
            return codes
        is_space = codes == 32
        return codes[np.concatenate(([True], ~(is_space[1:] & is_space[:-1])))]
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    is_space = _SPACE_TABLE.take(np.minimum(codes, 0xA1))
    # Collapse whitespace runs: layout (indentation, CRLF) is style, not content.
    keep = np.concatenate(([True], ~(is_space[1:] & is_space[:-1])))
    return np.where(is_space, np.uint32(32), codes)[keep]


def _bucketise(h: np.ndarray, bits: int) -> np.ndarray:
    """Hash keys to buckets, in place: the top ``bits`` bits of h * _MIX, as int64 (the same values)."""
    h *= _MIX
    h >>= _U64(64 - bits)
    return h.view(np.int64)


# Hash keys, each with the position its feature starts at (None for one text: only batches need positions).
_Keyed = list[tuple[np.ndarray, np.ndarray | None]]


def _char_ngrams(units: np.ndarray, inside: np.ndarray | None, cfg: HasherConfig) -> _Keyed:
    """Hash keys of every n-gram, n = ngram_min..ngram_max, each length by position, with where each starts.

    The n-gram at i hashes to sum_j units[i + j] * B**j (mod 2**64), grown one character at a time:
    h_{n+1}[i] = h_n[i] + units[i + n] * B**n (exactly what prefix hashes give, (P[i + n] - P[i]) * B**-i, as
    in ``_words``: the features the stored models were trained on). N-grams spanning a NUL are dropped;
    ``inside``: which codes are no NUL, None for one text (its only NULs are the first and the last code, so its
    n-grams of length n start at 1 .. size - n - 1: a slice, no mask).
    """
    size = units.shape[0]
    h, whole, power = units, inside, 1
    out = []
    for n in range(1, cfg.ngram_max + 1):
        if n > 1:
            width = max(size - n + 1, 0)
            h = h[:width] + units[n - 1 : n - 1 + width] * _U64(power)
            if whole is not None:
                whole = whole[:width] & inside[n - 1 : n - 1 + width]
        power = power * _BASE % 2**64
        if n < cfg.ngram_min:
            continue
        if whole is None:
            out.append((h[1 : size - n] ^ _U64(n), None))
        else:
            out.append((h[whole] ^ _U64(n), np.flatnonzero(whole)))
    return out


def _words(units: np.ndarray, codes: np.ndarray, doc_of: np.ndarray | None) -> _Keyed:
    """Hash keys of every word, then of every pair of neighbouring words in one text, with where each starts.

    ``doc_of``: the text of each position, None when there is one text.
    """
    word = _WORD_TABLE.take(codes if codes.dtype == np.uint8 else np.minimum(codes, 0xC0))
    # Codes open and close with a NUL, so words start and stop in turn: word k is first[k] + 1 .. last[k]. The
    # + 1 is left to the lookups (numpy's fixed cost per call is most of one text's work).
    edges = (word[1:] != word[:-1]).nonzero()[0]
    first, last = edges[0::2], edges[1::2]
    size = units.shape[0]
    prefix = units * _powers(_BASE, size)
    np.add.accumulate(prefix, out=prefix)  # prefix[i] = sum_{j<=i} units[j] * B**j
    unigram = (prefix.take(last) - prefix.take(first)) * _powers(_BASE_INV, size)[1:].take(first)
    unigram ^= _WORD_SALT
    bigram = unigram[:-1] * _BIGRAM_MULT
    bigram += unigram[1:]
    if doc_of is None:
        return [(unigram, None), (bigram, None)]
    starts = first + 1
    doc = doc_of.take(starts)
    same_doc = doc[1:] == doc[:-1]
    return [(unigram, starts), (bigram[same_doc], starts[:-1][same_doc])]


def _one_text_keys(units: np.ndarray, codes: np.ndarray, cfg: HasherConfig) -> np.ndarray:
    """The keys ``_char_ngrams`` and ``_words`` give one text, in their order, built in one array.

    For one text numpy's fixed cost per call is most of the work: each n-gram length grows in its own slice of
    the output from the length before, and no part is copied or concatenated (~3 us less for 2 kB).
    """
    size = units.shape[0]
    word_keys = [k for k, _ in _words(units, codes, None)] if cfg.words else []
    lengths = range(cfg.ngram_min, cfg.ngram_max + 1)
    counts = [max(size - n - 1, 0) for n in lengths]  # length n starts at 1 .. size - n - 1 (see _char_ngrams)
    keys = np.empty(sum(counts) + sum(k.shape[0] for k in word_keys), dtype=_U64)
    h, power = units, 1  # h_n[i] at i = 0 .. size - n, grown as _char_ngrams grows it, up to ngram_min - 1
    for n in range(2, cfg.ngram_min):
        power = power * _BASE % 2**64  # B**(n - 1)
        width = max(size - n + 1, 0)
        h = h[:width] + units[n - 1 : n - 1 + width] * _U64(power)
    grown: list[tuple[np.ndarray, int]] = []  # per length n, its slice of keys: h_n[1 : size - n]
    at = 0
    for n, count in zip(lengths, counts, strict=True):
        out = keys[at : at + count]
        if n == 1:
            np.copyto(out, units[1 : 1 + count])
        else:
            power = power * _BASE % 2**64  # B**(n - 1)
            np.multiply(units[n : n + count], _U64(power), out=out)
            out += grown[-1][0][:count] if grown else h[1 : 1 + count]
        grown.append((out, n))
        at += count
    for out, n in grown:  # only now: each length grew from the unmixed sums of the one before
        out ^= _U64(n)
    for k in word_keys:
        keys[at : at + k.shape[0]] = k
        at += k.shape[0]
    return keys


def _buckets(texts: Sequence[str], cfg: HasherConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """The bucket of every feature occurrence of a batch, and the text of each (None for one text: its own)."""
    n_docs = len(texts)
    codes = _encode(texts, cfg.max_chars)
    units = codes.astype(_U64)
    units += _U64(1)  # a character hashes as its code point + 1, so a NUL counts too
    inside = None if n_docs == 1 else codes != 0
    doc_of = None if inside is None else np.cumsum(~inside, dtype=np.int64) - 1  # the text at each position
    if doc_of is None:
        return _bucketise(_one_text_keys(units, codes, cfg), cfg.bits), None
    parts = _char_ngrams(units, inside, cfg) + (_words(units, codes, doc_of) if cfg.words else [])
    keys = np.concatenate([k for k, _ in parts])
    doc = doc_of.take(np.concatenate([s for _, s in parts if s is not None]))
    return _bucketise(keys, cfg.bits), doc


def _norm(occurrences: int) -> float:
    """The value of each feature occurrence of a text with this many: 1/sqrt(occurrences)."""
    return 1.0 / math.sqrt(max(occurrences, 1))


def featurize(texts: Sequence[str], cfg: HasherConfig) -> SparseBatch:
    """Hashed, length-normalised n-gram and word features of a batch of texts."""
    n_docs = len(texts)
    bucket, doc = _buckets(texts, cfg)
    # Each occurrence weighs 1/sqrt(occurrences in its text): the exact L2 normalisation when no feature
    # repeats, and close to it otherwise. Repeats need no merging (the dot product adds them up), which
    # spares sorting millions of keys per batch; measured as accurate as sublinear-tf L2 on held-out data.
    if doc is None:  # one text, the SDK's case: every entry is its own
        doc = np.zeros(bucket.shape[0], dtype=np.int64)
        norm = np.array([_norm(bucket.shape[0])])
    else:
        norm = 1.0 / np.sqrt(np.maximum(np.bincount(doc, minlength=n_docs), 1))
    return SparseBatch(doc, bucket, norm.take(doc), n_docs, norm)


def _probability(z: np.ndarray) -> np.ndarray:
    """P(injection) of decision values, clipped so that exp stays finite."""
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -50.0), 50.0)))


class InjectionClassifier:
    """Logistic regression over hashed features.

    ``to_arrays``/``from_arrays`` are its stored form, weights int8-quantised to keep the file small; reading
    and writing the file is ``processors.loaders``' job. ``int8``: the weights' int8 codes and scale when
    ``weights`` is exactly their product (``from_arrays``); scores then add up the codes (exact integers, in any
    order) and scale the sum once, reading the 256 KB codes, which stay in cache between calls, instead of the
    2 MB weights.
    """

    __slots__ = ("_codes", "_scale", "bias", "config", "weights")

    def __init__(
        self, weights: np.ndarray, bias: float, config: HasherConfig, int8: tuple[np.ndarray, float] | None = None
    ) -> None:
        if weights.shape != (1 << config.bits,):
            raise ValueError(f"expected {1 << config.bits} weights, got {weights.shape}")
        self.weights = weights.astype(np.float64)
        self.bias = float(bias)
        self.config = config
        self._codes, self._scale = int8 if int8 is not None else (None, 1.0)

    def decision(self, batch: SparseBatch) -> np.ndarray:
        """Per text, bias + norm * the sum of its entries' weights (every entry of a text has the same value).

        With int8 weights the sum is of their codes, an exact integer in any order, scaled once: a text scores
        the same alone (the SDK, ``probability``) and in a batch (the worker), to the last bit.
        """
        weights = self.weights if self._codes is None else self._codes
        sums = np.bincount(batch.doc, weights=weights.take(batch.bucket), minlength=batch.n_docs)
        return sums * self._scale * batch.norm + self.bias

    def probability(self, text: str) -> float:
        """``predict_proba`` of one text (the SDK's input guard), without a batch's document arrays or bincount."""
        if self._codes is None:  # float sums depend on their order: bincount's, as for a batch
            return float(_probability(self.decision(featurize([text], self.config)))[0])
        bucket, _ = _buckets([text], self.config)
        # int32 adds int8 codes ~1 us faster than int64 for 2 kB, and cannot overflow below 2**24 of them
        total = float(np.add.reduce(self._codes.take(bucket), dtype=np.int32 if bucket.size < 1 << 24 else np.int64))
        z = total * self._scale * _norm(bucket.shape[0]) + self.bias
        # exp of a one-element array, as in a batch: numpy's exp of a scalar may differ from it in the last bit
        return 1.0 / (1.0 + float(np.exp(np.array([-min(max(z, -50.0), 50.0)]))[0]))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(injection) per text; an empty batch gives an empty array."""
        if len(texts) == 0:
            return np.zeros(0)
        if len(texts) == 1:
            return np.array([self.probability(texts[0])])
        return _probability(self.decision(featurize(texts, self.config)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The stored form: int8 ``weights`` with their ``scale``, ``bias`` and the hasher config as ``meta``."""
        scale = float(np.abs(self.weights).max()) / 127.0 or 1.0
        quantised = np.round(self.weights / scale).astype(np.int8)
        c = self.config
        meta = np.array([c.bits, c.ngram_min, c.ngram_max, c.max_chars, int(c.words)], dtype=np.int64)
        return {"weights": quantised, "scale": np.array(scale), "bias": np.array(self.bias), "meta": meta}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> InjectionClassifier:
        """The inverse of ``to_arrays`` (up to the int8 quantisation)."""
        bits, ngram_min, ngram_max, max_chars, words = (int(v) for v in arrays["meta"])
        config = HasherConfig(bits, ngram_min, ngram_max, max_chars, bool(words))
        codes, scale = np.asarray(arrays["weights"]), float(arrays["scale"])
        weights = codes.astype(np.float64) * scale
        return cls(weights, float(arrays["bias"]), config, (codes, scale) if codes.dtype == np.int8 else None)
