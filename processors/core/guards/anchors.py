"""Anchored scans: the matches of ``regex.finditer``, found by trying the regex only where a match can start.

``re`` tries a pattern that opens with an alternation of words (``(?:reveal|show|print|...)``) at nearly every
letter of the text, ~50 ns a character: 100 us for a 2 kB prompt. Every match of such a pattern starts with one
of a few literals, read off the parsed pattern (``leading``). ``Anchors`` finds the positions where one of them
may start, with one table lookup per position on the text's 3-grams of 5-bit character codes (``gram_keys``,
computed once per text for every regex; letters fold case and other characters share codes, so the positions
are a superset), and ``finditer`` runs ``regex.match`` there only. The same lookup shows which of the literals
``screen.requirement`` asks of each top-level alternative the text may hold; the starts of an alternative that
cannot match anywhere in the text are not tried (``list ... before`` in a prompt without "before" or its kin).

``finditer`` yields what ``regex.finditer`` yields: the leftmost match at or after the end of the previous one is
the match at the first possible start where the regex matches, and ``match`` at a position sees the text before
it (look-behinds, ``\b``, ``^``) as a scan does. A pattern whose starts are not a few known literals (an
optional or wide first item, IGNORECASE) is scanned by ``re`` as before. ``AnchorIndex`` packs the tables of
several regexes into one, so one text is looked up once for all of them (the SDK's input guard).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import numpy as np

from llmpulse.processors.core.guards.screen import Requirement, rarest_piece, requirement

Strings = frozenset[str]

_MAX_STRINGS = 64  # a set of exact strings grown by cross products stops growing past this many
_MAX_CLASS = 12  # a character class with more members than this is not read as strings
# Below this many characters ``re`` scans faster than the lookup's fixed cost (~3 us).
ANCHOR_FROM = 256
# Below this many characters ``AnchorIndex`` trusts its table bits: checking literal sets string by string costs
# more than the regexes it spares (measured break-even on prompt-like text: ~380).
HELD_FROM = 384
_ZERO_WIDTH = (sre.AT, sre.ASSERT, sre.ASSERT_NOT)


def _union(alternatives: Sequence[object], read: Callable[[object], Strings | None]) -> Strings | None:
    """The strings ``read`` gives for every alternative of a branch, or None if it cannot read one."""
    union: set[str] = set()
    for alternative in alternatives:
        strings = read(alternative)
        if strings is None:
            return None
        union |= strings
    return frozenset(union)


def _product(left: Strings | None, right: Strings | None) -> Strings | None:
    if left is None or right is None or len(left) * len(right) > _MAX_STRINGS:
        return None
    return frozenset(a + b for a in left for b in right)


def _strings(op: object, av: object) -> Strings | None:
    """Every string the item matches, when they are few and known exactly (zero-width items match ""), else None."""
    if op is sre.LITERAL:
        return frozenset((chr(av),))  # type: ignore[arg-type]
    if op is sre.IN:
        chars: set[str] = set()
        for kind, value in av:  # type: ignore[attr-defined]
            if kind is sre.LITERAL:
                chars.add(chr(value))
            elif kind is sre.RANGE and value[1] - value[0] <= _MAX_CLASS:
                chars.update(map(chr, range(value[0], value[1] + 1)))
            else:  # negated, a category, a wide range
                return None
        return frozenset(chars) if len(chars) <= _MAX_CLASS else None
    if op in _ZERO_WIDTH:
        return frozenset(("",))
    if op is sre.SUBPATTERN and not av[1] & re.IGNORECASE:  # type: ignore[index]
        return _sequence_strings(av[3])  # type: ignore[index]
    if op is sre.BRANCH:
        union = _union(av[1], _sequence_strings)  # type: ignore[index]
        return union if union is not None and len(union) <= _MAX_STRINGS else None
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and av[1] <= 2:  # type: ignore[index]
        low, high, body = av  # type: ignore[misc]
        once = _sequence_strings(body)
        twice = _product(once, once) if high == 2 else frozenset()
        if once is None or twice is None:
            return None
        return (frozenset(("",)) if low == 0 else frozenset()) | (once if low <= 1 else frozenset()) | twice
    return None


def _sequence_strings(items: Sequence[tuple[object, object]]) -> Strings | None:
    strings: Strings | None = frozenset(("",))
    for op, av in items:
        strings = _product(strings, _strings(op, av))
    return strings


def _starts(items: Sequence[tuple[object, object]]) -> Strings | None:
    """Non-empty strings one of which begins every match of the sequence ``items``; None when unknown."""
    prefixes: Strings = frozenset(("",))
    for op, av in items:
        strings = _strings(op, av)
        if strings is None:
            return _item_starts(op, av) if prefixes == {""} else (None if "" in prefixes else prefixes)
        grown = _product(prefixes, strings)
        if grown is None:  # too many: the prefixes so far begin every match all the same
            break
        prefixes = grown
    return None if "" in prefixes else prefixes


def _item_starts(op: object, av: object) -> Strings | None:
    """``_starts`` of an item that does not match a few known strings."""
    if op is sre.SUBPATTERN:
        return None if av[1] & re.IGNORECASE else _starts(av[3])  # type: ignore[index]
    if op is sre.ATOMIC_GROUP:
        return _starts(av)  # type: ignore[arg-type]
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and av[0] >= 1:  # type: ignore[index]
        return _starts(av[2])  # type: ignore[index]
    if op is sre.BRANCH:
        return _union(av[1], _starts)  # type: ignore[index]
    return None


def alternatives(regex: re.Pattern[str]) -> list[list[tuple[object, object]]] | None:
    """The top-level alternatives of ``regex`` (inside any groups around the whole), as ``screen.requirement``
    reads them; None for a pattern ``leading`` cannot read (IGNORECASE, bytes)."""
    if regex.flags & (re.IGNORECASE | re.LOCALE) or not isinstance(regex.pattern, str):
        return None
    items = list(sre_parse.parse(regex.pattern, regex.flags))
    while len(items) == 1 and items[0][0] is sre.SUBPATTERN:
        if items[0][1][1] & re.IGNORECASE:
            return None
        items = list(items[0][1][3])
    if len(items) == 1 and items[0][0] is sre.BRANCH:
        return [list(alternative) for alternative in items[0][1][1]]
    return [items]


def leading(regex: re.Pattern[str]) -> list[Strings] | None:
    """Per alternative of ``regex``, literals one of which begins each of its matches (exactly as written);
    None when unknown for one of them."""
    found = [_starts(alternative) for alternative in alternatives(regex) or [[]]]  # [[]]: unknown
    return [strings for strings in found if strings is not None] if None not in found else None


def _code(char: str) -> int:
    """A character's 5-bit code: letters 1-26 either case, other ASCII 27-31, everything else 0."""
    if not char.isascii():
        return 0
    return ord(char.lower()) - 96 if char.isalpha() else 27 + ord(char) % 5


_CODE_OF = np.array([_code(chr(c)) for c in range(128)] + [0], dtype=np.uint16)  # 128: every non-ASCII
_TRANSLATE = _CODE_OF[:128].astype(np.uint8).tobytes() * 2  # a bytes.translate table; 128+ never occur
_BITS = 16  # alternatives, and literal sets, a table entry has room for


@lru_cache(maxsize=8)
def gram_keys(text: str) -> np.ndarray:
    """The key of the 3-gram of codes starting at each position of ``text`` (two code-0 pads at the end).

    Cached for the last few texts: a detector runs several regexes over the same text.
    """
    if text.isascii():
        codes = np.frombuffer(text.encode("ascii").translate(_TRANSLATE) + b"\0\0", dtype=np.uint8)
        codes = codes.astype(np.uint16)
    else:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        codes = np.concatenate((_CODE_OF.take(np.minimum(points, 128)), np.zeros(2, np.uint16)))
    keys = (codes[:-2] << 10) | (codes[1:-1] << 5) | codes[2:]
    keys.flags.writeable = False  # shared between callers
    return keys


def _grams(piece: str) -> np.ndarray:
    """Keys of the 3-grams that start with ``piece`` (3 characters; shorter: any may follow, pads included)."""
    key = 0
    for char in piece:
        key = key << 5 | _code(char)
    free = 5 * (3 - len(piece))
    return (key << free) + np.arange(1 << free)


class Anchors:
    """Where a regex may start in a text, from one table on ``gram_keys``.

    Bit j of an entry: alternative j's leading literals may start with that 3-gram. Bit 16 + k: literal set k of
    ``screen.requirement`` (every match of an alternative holds one string of each of its sets) may start there.
    A text that holds none of an alternative's set k cannot match it anywhere, so its starts are not tried:
    at any position the regex matches as its possible alternatives do, in order.
    """

    __slots__ = ("_needs", "_table")

    def __init__(self, heads: Sequence[Strings], requirement: Requirement) -> None:
        self._table = np.zeros(1 << 15, dtype=np.uint32)
        for j, literals in enumerate(heads):
            for string in literals:
                self._table[_grams(string[:3])] |= np.uint32(1 << j)
        if len(requirement) != len(heads):  # not read per alternative: every alternative is always possible
            requirement = ((),) * len(heads)
        sets = sorted({s for branch in requirement for s in branch}, key=sorted)[:_BITS]
        for k, literal_set in enumerate(sets):
            for string in literal_set:  # a text holding the string holds its rarest piece
                self._table[_grams(rarest_piece(string))] |= np.uint32(1 << (_BITS + k))
        bit = {s: 1 << (_BITS + k) for k, s in enumerate(sets)}
        # Per alternative: its start bit and the set bits a text must hold (a set past the 16th asks nothing).
        self._needs = [(1 << j, sum(bit.get(s, 0) for s in set(branch))) for j, branch in enumerate(requirement)]

    @classmethod
    def of(cls, regex: re.Pattern[str]) -> Anchors | None:
        """Anchors for ``regex``, or None when its starts are unknown, not all ASCII, or too many alternatives."""
        heads = leading(regex)
        if not heads or len(heads) > _BITS or not all(s[:3].isascii() for h in heads for s in h):
            return None
        return cls(heads, requirement(regex, lowered=False))

    def positions(self, text: str) -> list[int]:
        """Ascending positions of ``text`` where a match may start (all those where one does)."""
        found = self._table.take(gram_keys(text))
        held = int(np.bitwise_or.reduce(found))
        starts = sum(start for start, need in self._needs if held & need == need)
        if not starts:
            return []
        return (found & np.uint32(starts)).astype(bool).nonzero()[0].tolist()  # nonzero is fastest on bools


@lru_cache(maxsize=256)
def anchors(regex: re.Pattern[str]) -> Anchors | None:
    return Anchors.of(regex)


def finditer(regex: re.Pattern[str], text: str, starts: list[int] | None = None) -> Iterator[re.Match[str]]:
    """The matches ``regex.finditer(text)`` yields, in order (see the module docstring).

    ``starts``: ascending positions where every match starts (``AnchorIndex.starts``), if known.
    """
    if starts is None:
        found = anchors(regex) if len(text) >= ANCHOR_FROM else None
        if found is None:
            yield from regex.finditer(text)
            return
        starts = found.positions(text)
    end = 0
    match = regex.match
    for start in starts:
        if start >= end:
            m = match(text, start)
            if m is not None:
                yield m
                end = m.end()


def _requirement_table(regex: re.Pattern[str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """For a regex whose starts are unknown: a table with a bit per literal set of ``screen.requirement`` (where
    one of its strings may start), and per alternative the bits a text must hold (no start bit)."""
    table = np.zeros(1 << 15, dtype=np.uint32)
    branches = requirement(regex, lowered=False)
    sets = sorted({s for branch in branches for s in branch}, key=sorted)[: 2 * _BITS]
    for k, literal_set in enumerate(sets):
        for string in literal_set:
            table[_grams(rarest_piece(string))] |= np.uint32(1 << k)
    bit = {s: 1 << k for k, s in enumerate(sets)}
    return table, [(0, sum(bit.get(s, 0) for s in set(branch))) for branch in branches]


class AnchorIndex:
    """``Anchors`` of several regexes in one table: for one text, which of them may match it and where.

    A regex's ``Anchors`` costs a lookup per position of the text; one text checked against a dozen regexes
    would pay a dozen. Here every regex's table bits are packed into uint64 words, so one lookup per word finds
    the start positions of them all; a regex whose starts are unknown keeps its ``screen.requirement`` bits,
    which tell whether it may match at all. Sound as ``Anchors`` is: every match starts at a position given.
    (For many texts at once ``screen.Screen`` is cheaper per text; this is the one-text path.)

    A table bit stands for the rarest 3-gram of any string of a literal set, and common ones ("ver" of
    "override", "cti" of "directions") occur in most long prompts. So an alternative the bits allow is tried
    only if each of its literal sets also has a string every 3-gram of which occurs in the text (``_held``):
    one check for all sets, ~5 us for 2 kB, run only when some alternative is allowed and the text is long
    enough (``HELD_FROM``), where each regex spared saves ~5 us (finding its starts and trying them).
    """

    __slots__ = ("_grams", "_lowered", "_programs", "_set_starts", "_string_starts", "_words")

    def __init__(self, regexes: Sequence[tuple[re.Pattern[str], bool]]) -> None:
        words: list[np.ndarray] = []
        # Per regex: its word, whether its starts are known, and per alternative the bits a text must hold for
        # it (its start bit, if known, and its literal sets'), its start bit, both as moved into the word, and
        # the literal sets checked string by string (their indices in _held's answer).
        self._programs: list[tuple[int, bool, list[tuple[int, int, tuple[int, ...]]]]] = []
        checked: dict[frozenset[str], int] = {}
        free = 0
        for regex, _lowered in regexes:
            found = anchors(regex)
            table, needs = (found._table, found._needs) if found is not None else _requirement_table(regex)
            bits = int(np.bitwise_or.reduce(table)) | sum(start | need for start, need in needs)
            used = [b for b in range(32) if bits >> b & 1]
            if not words or free + len(used) > 64:
                words.append(np.zeros(1 << 15, dtype=np.uint64))
                free = 0
            moved = {b: free + k for k, b in enumerate(used)}
            for b, to in moved.items():
                words[-1] |= ((table >> np.uint32(b)) & np.uint32(1)).astype(np.uint64) << np.uint64(to)
            free += len(used)
            branches = requirement(regex, lowered=False)
            if len(branches) != len(needs):  # as Anchors reads it: then no alternative asks anything
                branches = ((),) * len(needs)
            alternatives = [
                (_move(start | need, moved), _move(start, moved),
                 tuple(checked.setdefault(s, len(checked)) for s in branch if _checkable(s)))
                for (start, need), branch in zip(needs, branches, strict=True)
            ]
            self._programs.append((len(words) - 1, found is not None, alternatives))
        self._words = np.stack(words)  # (words, 2**15): one take reads every word of a position
        self._lowered = [lowered for _regex, lowered in regexes]
        # The 3-gram keys of every checked set's strings, set after set, string after string.
        strings = [sorted(literal_set) for literal_set in checked]
        self._set_starts = np.cumsum([0] + [len(s) for s in strings[:-1]], dtype=np.intp)
        flat = [string for literal_set in strings for string in literal_set]
        self._string_starts = np.cumsum([0] + [len(s) - 2 for s in flat[:-1]], dtype=np.intp)
        self._grams = np.array([_key(s[i : i + 3]) for s in flat for i in range(len(s) - 2)], dtype=np.intp)

    def _held(self, keys: np.ndarray) -> list[bool]:
        """Per checked literal set, whether the text of ``keys`` may hold it: every 3-gram of one of its strings
        occurs in the text (anywhere: a necessary condition, as sound as the table bits)."""
        present = np.zeros(1 << 15, dtype=bool)
        present[keys.astype(np.intp)] = True
        strings = np.logical_and.reduceat(present.take(self._grams), self._string_starts)
        return np.logical_or.reduceat(strings, self._set_starts).tolist()

    def starts(self, lowered: str, text: str) -> list[list[int] | None]:
        """Per regex, ascending positions of its text (``lowered`` or ``text``, as it runs on) where a match
        may start; [] when it cannot match; None when it may but its starts are unknown (scan the text)."""
        keys = cased_keys = gram_keys(lowered)
        found = cased = self._words.take(keys, axis=1)  # ASCII text lower-cases in place, to the same codes
        if not all(self._lowered) and not text.isascii():
            cased_keys = gram_keys(text)
            cased = self._words.take(cased_keys, axis=1)
        held = np.bitwise_or.reduce(found, axis=1).tolist()
        held_cased = held if cased is found else np.bitwise_or.reduce(cased, axis=1).tolist()
        sets_held: dict[bool, list[bool]] = {}  # _held of the lowered text (True) and of the text, when asked
        check_sets = len(lowered) >= HELD_FROM
        out: list[list[int] | None] = []
        for (word, anchored, alternatives), on_lowered in zip(self._programs, self._lowered, strict=True):
            on_lowered = on_lowered or cased is found  # the text's own keys are the lowered text's
            have = (held if on_lowered else held_cased)[word]
            starts = 0  # the start bits of the alternatives the text holds everything for
            possible = False
            for needs, start, sets in alternatives:
                if have & needs != needs:
                    continue
                if sets and check_sets:
                    literal_sets = sets_held.get(on_lowered)
                    if literal_sets is None:
                        literal_sets = sets_held[on_lowered] = self._held(keys if on_lowered else cased_keys)
                    if not all(literal_sets[k] for k in sets):
                        continue
                starts |= start
                possible = True
            if not anchored:
                out.append(None if possible else [])
            elif starts:
                positions = (found if on_lowered else cased)[word]
                out.append((positions & np.uint64(starts)).astype(bool).nonzero()[0].tolist())
            else:
                out.append([])
        return out


def _checkable(literal_set: frozenset[str]) -> bool:
    """Whether ``AnchorIndex._held`` can check the set: every string is ASCII (``screen.NON_ASCII`` stands for
    any character past it) and has a 3-gram."""
    return all(len(string) >= 3 and string.isascii() for string in literal_set)


def _key(piece: str) -> int:
    """The ``gram_keys`` key of a 3-character piece."""
    return _code(piece[0]) << 10 | _code(piece[1]) << 5 | _code(piece[2])


def _move(bits: int, moved: dict[int, int]) -> int:
    return sum(1 << to for b, to in moved.items() if bits >> b & 1)
