"""Screening: which texts of a batch can match a regex at all, for many regexes in one vectorised pass.

Every match of a detector pattern contains certain literals: ``ignore`` or ``disregard`` or ..., and
``instructions`` or ``rules`` or .... ``requirement`` reads these off the parsed pattern. A text holding
none of them cannot match, so the regex need not run on it. ``Screen`` looks for all of them at once: the
lower-cased batch becomes one byte per character (a small alphabet of the characters the literals use), each
position's 3-gram becomes a table index, and one gather yields which literal sets may occur there. Ordinary
traffic contains the triggers of few patterns, so most regex scans run on a handful of texts or none.

The screen may pass texts that do not match (the regex decides) but never drops one that does: anything it
cannot read as a literal (negated classes, optional parts, look-arounds, back-references) constrains nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import pairwise
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import NamedTuple

import numpy as np

Literals = frozenset[str]  # a match contains at least one of these strings
Branch = tuple[Literals, ...]  # ...and at least one string of every set
Requirement = tuple[Branch, ...]  # a match satisfies at least one branch; an empty branch constrains nothing

UNCONSTRAINED: Requirement = ((),)
NON_ASCII = "\x80"  # stands for every non-ASCII character, in literals and in screened text alike
_MAX_CLASS = 12  # a character class with more members than this is not worth a literal set
_MAX_STRINGS = 48  # a literal set grown by cross products stops growing past this many strings
_PER_BRANCH = 2  # literal sets kept per branch: the two rarest
_USEFUL_COST = 0.05  # a further set whose strings start this often narrows little (" " or "-", say)
# English character frequencies, to prefer rare literals ("jailbr" over "the"); others count as 0.002.
_FREQUENCY = dict(zip("etaoinshrdlcumwfgypbvkjxqz", (
    0.127, 0.091, 0.082, 0.075, 0.070, 0.067, 0.063, 0.061, 0.060, 0.043, 0.040, 0.028, 0.028, 0.024, 0.024,
    0.022, 0.020, 0.020, 0.019, 0.015, 0.010, 0.008, 0.002, 0.002, 0.001, 0.001), strict=True)) | {
    " ": 0.15, ".": 0.01, ",": 0.01, "-": 0.005} | dict.fromkeys("0123456789", 0.0005)
# Letters cluster into common short words ("in", "the"), so a piece's real frequency exceeds the product of
# its letters'; more so for longer pieces. Factors by piece length 1, 2, 3.
_CLUSTERING = (1.0, 10.0, 30.0)


class Screened(NamedTuple):
    """A regex and whether it runs on lower-cased text (True) or on the text as written."""

    regex: re.Pattern[str]
    lowered: bool


def requirement(regex: re.Pattern[str], lowered: bool) -> Requirement:
    """What every match of ``regex`` contains, as literal sets of lower-case ASCII (``NON_ASCII`` aside).

    ``lowered``: the regex runs on lower-cased text. If not, a non-ASCII character of the pattern constrains
    nothing, since lower-casing may turn it into ASCII ("\u212a" Kelvin sign into "k").
    """
    if regex.flags & (re.IGNORECASE | re.LOCALE) or not isinstance(regex.pattern, str):
        return UNCONSTRAINED
    items = list(sre_parse.parse(regex.pattern, regex.flags))
    while len(items) == 1 and items[0][0] is sre.SUBPATTERN:  # a group around the whole pattern
        if items[0][1][1] & re.IGNORECASE:
            return UNCONSTRAINED
        items = list(items[0][1][3])
    if len(items) == 1 and items[0][0] is sre.BRANCH:
        return tuple(_best(_sequence(branch, lowered), _PER_BRANCH) for branch in items[0][1][1])
    return (_best(_sequence(items, lowered), _PER_BRANCH),)


def _fold(code: int, lowered: bool) -> str | None:
    if code < 128:
        return chr(code).lower()
    return NON_ASCII if lowered else None


def _class(items: Iterable[tuple[object, object]], lowered: bool) -> Literals | None:
    """The characters a class matches, folded; None when negated, large, or not known exactly."""
    chars: set[str | None] = set()
    for op, av in items:
        if op is sre.LITERAL:
            chars.add(_fold(av, lowered))  # type: ignore[arg-type]
        elif op is sre.RANGE and av[1] - av[0] <= _MAX_CLASS:  # type: ignore[index]
            chars.update(_fold(c, lowered) for c in range(av[0], av[1] + 1))  # type: ignore[index]
        elif op is sre.CATEGORY and av in (sre.CATEGORY_DIGIT, sre.CATEGORY_UNI_DIGIT):
            chars.update("0123456789" + NON_ASCII)  # Unicode digits have no case: they stay non-ASCII
        else:
            return None
    if None in chars or len(chars) > _MAX_CLASS:
        return None
    return frozenset(chars)  # type: ignore[arg-type]


def _product(left: Literals | None, right: Literals | None) -> Literals | None:
    if left is None or right is None or len(left) * len(right) > _MAX_STRINGS:
        return None
    return frozenset(a + b for a in left for b in right)


def _exact(op: object, av: object, lowered: bool) -> Literals | None:
    """The few strings an item matches exactly ("" when optional), or None: "stocks?" gives stock/stocks."""
    if op is sre.LITERAL:
        char = _fold(av, lowered)  # type: ignore[arg-type]
        return frozenset((char,)) if char else None
    if op is sre.IN:
        return _class(av, lowered)  # type: ignore[arg-type]
    if op is sre.SUBPATTERN and not av[1] & re.IGNORECASE:  # type: ignore[index]
        return _exact_sequence(av[3], lowered)  # type: ignore[index]
    if op is sre.BRANCH:
        union: set[str] = set()
        for alternative in av[1]:  # type: ignore[index]
            strings = _exact_sequence(alternative, lowered)
            if strings is None:
                return None
            union |= strings
        return frozenset(union) if len(union) <= _MAX_STRINGS else None
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[1] <= 2:  # type: ignore[index]
        low, high, body = av  # type: ignore[misc]
        once = _exact_sequence(body, lowered)
        twice = _product(once, once) if high == 2 else frozenset()
        if once is None or twice is None:
            return None
        return (frozenset(("",)) if low == 0 else frozenset()) | (once if low <= 1 else frozenset()) | twice
    return None


def _exact_sequence(items: Sequence[tuple[object, object]], lowered: bool) -> Literals | None:
    strings: Literals | None = frozenset(("",))
    for op, av in items:
        strings = _product(strings, _exact(op, av, lowered))
    return strings


def _sequence(items: Sequence[tuple[object, object]], lowered: bool) -> list[Literals]:
    """Literal sets all required by a concatenation; runs of exactly known items spell whole strings."""
    found: list[Literals] = []
    run: Literals = frozenset(("",))

    def flush() -> None:
        if "" not in run:  # a run that may be empty requires nothing
            found.append(run)

    for op, av in items:
        strings = _exact(op, av, lowered)
        grown = _product(run, strings)
        if grown is not None:
            run = grown
            continue
        flush()
        if strings is not None:
            run = strings
        else:
            run = frozenset(("",))
            found.extend(_item(op, av, lowered))
    flush()
    return found


def _item(op: object, av: object, lowered: bool) -> list[Literals]:
    """Literal sets required by an item that does not match a few known strings."""
    if op is sre.SUBPATTERN:  # a group; "(?i:...)" would let letters match other cases: no constraint
        return [] if av[1] & re.IGNORECASE else _sequence(av[3], lowered)  # type: ignore[index]
    if op is sre.ATOMIC_GROUP:
        return _sequence(av, lowered)  # type: ignore[arg-type]
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, _high, body = av  # type: ignore[misc]
        if low == 0:
            return []
        once = _exact_sequence(body, lowered)
        if once is not None and len(once) == 1 and low > 1:  # "#{2,}" requires "##"
            return [frozenset((next(iter(once)) * min(low, 3),))]
        return _sequence(body, lowered)
    if op is sre.BRANCH:
        union: set[str] = set()
        for alternative in av[1]:  # type: ignore[index]
            best = _best(_sequence(alternative, lowered), 1)
            if not best:
                return []  # one unconstrained alternative frees the whole alternation
            union |= best[0]
        return [frozenset(union)]
    return []  # look-arounds, anchors, back-references, wide classes: no constraint


def _rarity(piece: str) -> float:
    """Estimated chance that a position of English text starts ``piece``."""
    return _CLUSTERING[len(piece) - 1] * float(np.prod([_FREQUENCY.get(ch, 0.002) for ch in piece]))


def rarest_piece(string: str) -> str:
    """The string's rarest 3-character piece (the whole string when shorter)."""
    return min((string[i : i + 3] for i in range(max(len(string) - 2, 1))), key=_rarity)


def _cost(literals: Literals) -> float:
    """Estimated chance that a position starts one of the strings' rarest pieces."""
    return sum(_rarity(rarest_piece(s)) for s in literals)


def _best(sets: list[Literals], keep: int) -> Branch:
    """The rarest literal set, then up to ``keep - 1`` more that are rare enough to narrow it further."""
    ranked = sorted(set(sets), key=lambda s: (_cost(s), sorted(s)))
    return tuple(ranked[:1] + [s for s in ranked[1:keep] if _cost(s) < _USEFUL_COST])


def _bits(indices: Iterable[int], words: int) -> np.ndarray:
    """Literal-set indices as a bit mask of ``words`` uint64 words."""
    mask = [0] * words
    for k in indices:
        mask[k // 64] |= 1 << (k % 64)
    return np.array(mask, dtype=np.uint64)


class Screen:
    """Candidate texts for each of a fixed list of regexes (see the module docstring)."""

    __slots__ = ("_branch_mask", "_branch_owner", "_charmap", "_code_of", "_gram_index", "_gram_mask",
                 "n_regexes")

    def __init__(self, regexes: Sequence[Screened]) -> None:
        requirements = [requirement(regex, lowered) for regex, lowered in regexes]
        sets = sorted({s for req in requirements for branch in req for s in branch}, key=sorted)
        column = {s: i for i, s in enumerate(sets)}
        words = max(1, -(-len(sets) // 64))
        self._code_of, codes = _alphabet({c for s in sets for string in s for c in string})
        self._charmap = bytes(self._code_of[:128].tolist() * 2)  # bytes.translate table; 128+ never occur
        self._gram_index, self._gram_mask = _gram_table(sets, codes, words)
        branches = [branch for req in requirements for branch in req]
        # (words, branches): a branch is met when a text holds every literal set of its mask.
        self._branch_mask = np.column_stack([_bits((column[s] for s in b), words) for b in branches])
        self._branch_owner = np.repeat(np.arange(len(requirements)), [len(req) for req in requirements])  # its regex
        self.n_regexes = len(requirements)

    def _codes(self, joined: str) -> np.ndarray:
        if joined.isascii():  # the common case, a byte per character: one C-level translate
            return np.frombuffer(joined.encode("ascii").translate(self._charmap), dtype=np.uint8).astype(np.uint32)
        points = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        return self._code_of.take(np.minimum(points, 128))

    def candidates(self, lowered: Sequence[str]) -> np.ndarray:
        """Bool (n_texts, n_regexes): True where regex j may match text i. ``lowered``: lower-cased texts."""
        n = len(lowered)
        if n == 0:
            return np.zeros((0, self.n_regexes), dtype=bool)
        a = self._codes("\0".join(lowered) + "\0\0")  # two pads: every position starts a full 3-gram
        slot = self._gram_index.take((a[:-2] << 12) | (a[1:-1] << 6) | a[2:])
        hits = np.flatnonzero(slot != 0)
        present = np.zeros((self._gram_mask.shape[0], n), dtype=np.uint64)  # literal sets each text holds
        if hits.size:  # hits come in text order, so each text's hits are one run to OR together
            first, doc = _runs(lowered, hits)
            slots = slot.take(hits)
            for word, masks in enumerate(self._gram_mask):
                present[word, doc] = np.bitwise_or.reduceat(masks.take(slots), first)
        need = self._branch_mask[:, None, :]
        texts, branches = np.nonzero(((present[:, :, None] & need) == need).all(axis=0))  # (text, branch) met
        # A regex may match where any of its branches is met. Scattered rather than a (texts x branches) @
        # (branches x regexes) product: a float matmul runs in OpenBLAS, whose threads spin on another core
        # after every large product (measured: half an in-process pipeline's CPU time at ~7,700 calls a batch).
        candidates = np.zeros((n, self.n_regexes), dtype=bool)
        candidates[texts, self._branch_owner.take(branches)] = True
        return candidates


def _runs(texts: Sequence[str], hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each text's run of ``hits`` (ascending offsets into the NUL-joined texts) starts, and its text."""
    if len(texts) == 1:  # the SDK's case: one run
        return np.zeros(1, dtype=np.intp), np.zeros(1, dtype=np.intp)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    doc = np.searchsorted(starts, hits, side="right") - 1
    first = np.flatnonzero(np.concatenate(([True], doc[1:] != doc[:-1])))
    return first, doc[first]


def candidate_lists(candidates: np.ndarray) -> list[list[int]]:
    """Per column of a candidates matrix, the rows that are True, as Python lists."""
    cols, rows = np.nonzero(candidates.T)
    bounds = np.searchsorted(cols, np.arange(candidates.shape[1] + 1)).tolist()
    rows_list = rows.tolist()
    return [rows_list[a:b] for a, b in pairwise(bounds)]


def _alphabet(chars: set[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Codes 1..63 for the characters the literals use (NON_ASCII: every character past 127), 0 for the rest.

    Returns the code of each character 0..127 (index 128: NON_ASCII's code), upper-case ASCII as lower.
    Characters beyond 63 share a code: a coarser screen, never a wrong one.
    """
    codes = {c: 1 + i % 63 for i, c in enumerate(sorted(chars))}
    table = np.zeros(129, dtype=np.uint32)
    for c, code in codes.items():
        if c == NON_ASCII:
            table[128] = code
        else:
            table[ord(c)] = table[ord(c.upper())] = code
    return table, codes


def _gram_table(sets: list[Literals], codes: dict[str, int], words: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot per 3-gram of codes (2**18 entries, 0: none) and each slot's literal sets as bit masks."""
    masks = np.zeros((1 << 18, words), dtype=np.uint64)
    for k, s in enumerate(sets):
        for string in s:
            masks[_keys(string, codes), k // 64] |= np.uint64(1 << (k % 64))
    keys = np.flatnonzero(masks.any(axis=1))
    rows, slot = np.unique(masks[keys], axis=0, return_inverse=True)
    if rows.shape[0] >= 1 << 16:
        raise ValueError(f"{rows.shape[0]} distinct gram masks do not fit a uint16 slot")
    index = np.zeros(1 << 18, dtype=np.uint8 if rows.shape[0] < 255 else np.uint16)  # 256 KB stays in cache
    index[keys] = slot.reshape(-1) + 1
    return index, np.ascontiguousarray(np.vstack((np.zeros((1, words), np.uint64), rows)).T)


def _keys(string: str, codes: dict[str, int]) -> np.ndarray:
    """3-gram keys whose presence at a position shows ``string`` may start there (its rarest piece)."""
    window = rarest_piece(string)
    key = 0
    for ch in window:
        key = key << 6 | codes[ch]
    free = 3 - len(window)  # a short string: any following characters, padding and separators included
    return (key << 6 * free) + np.arange(1 << 6 * free, dtype=np.int64)
