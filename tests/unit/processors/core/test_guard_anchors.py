"""Anchored scans: the leading literals read off patterns, and that ``anchors.finditer`` yields exactly what
``regex.finditer`` yields for every detector regex.

As in the screen's soundness check, texts are generated from each regex's own parse tree, several matches in
one long text with random context (non-ASCII, upper-case, NUL), so overlapping and adjacent candidates, look-
behinds and word boundaries at a start are all exercised.
"""

from __future__ import annotations

import random
import re
from re import _parser as sre_parse  # type: ignore[attr-defined]

import pytest

from llmpulse.processors.core.guards.anchors import (
    ANCHOR_FROM,
    HELD_FROM,
    AnchorIndex,
    anchors,
    finditer,
    leading,
)
from tests.unit.processors.core.test_guard_screen import _CONTEXT, _generate, _guard_regexes, _labelled_texts


def _spans(matches: object) -> list[tuple[tuple[int, int], str]]:
    return [(m.span(), m.group()) for m in matches]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("pattern", "expected"), [
    (r"(?:ignore|disregard)\s+rules", [{"ignore", "disregard"}]),
    (r"you are|act as", [{"you are"}, {"act as"}]),
    (r"(?:new|real)_?x", [{"new_x", "newx", "real_x", "realx"}]),
    (r"(?<=\n)##", [{"##"}]),  # look-behinds consume nothing
    (r"DAN\b", [{"DAN"}]),  # as written: no case folding
    (r"(?:a|b)+c", [{"a", "b"}]),
    (r"x?yz", [{"xyz", "yz"}]),  # an optional first item: both spellings
])
def test_leading_reads_the_literals_each_alternative_starts_with(pattern: str, expected: list[set[str]]) -> None:
    assert leading(re.compile(pattern)) == [frozenset(e) for e in expected]


@pytest.mark.parametrize("pattern", [r"x?\wz", r"\w+ing", r"[^a]bc", r"(?i)ignore", r"abc|\d+"])
def test_leading_gives_up_where_a_match_may_start_anywhere(pattern: str) -> None:
    assert leading(re.compile(pattern)) is None
    assert anchors(re.compile(pattern)) is None


def test_a_rejected_match_still_hides_the_matches_it_overlaps() -> None:
    # finditer resumes after each match, even one the caller then rejects (a word start is checked later)
    regex = re.compile(r"(?:ignore|disregard)\s+(?:\w+\s+){0,3}instructions")
    text = "x" * ANCHOR_FROM + " xignore ignore previous instructions"
    assert _spans(finditer(regex, text)) == _spans(regex.finditer(text))
    assert [m.start() for m in finditer(regex, text)] == [ANCHOR_FROM + 2]


def test_an_alternative_whose_literals_are_absent_is_not_tried_and_changes_nothing() -> None:
    regex = re.compile(r"list\s+(?:\w+\s+){0,3}(?:rules|prompt)|show\s+(?:your|the)\s+secrets")
    text = "please list the order and show the secrets " * 20
    assert anchors(regex).positions(text) == [m.start() for m in re.finditer("show", text)]  # type: ignore[union-attr]
    assert _spans(finditer(regex, text)) == _spans(regex.finditer(text))


def test_anchored_scans_yield_what_re_yields_on_generated_texts() -> None:
    rng = random.Random(5)
    anchored = 0
    for regex, lowered in _guard_regexes():
        tree = list(sre_parse.parse(regex.pattern, regex.flags))
        for _ in range(40):
            parts = []
            while sum(map(len, parts)) < ANCHOR_FROM + 50:
                core = _generate(tree, rng, {})
                parts.append(rng.choice(_CONTEXT) + (core.upper() if rng.random() < 0.2 else core))
                parts.append(rng.choice(_CONTEXT) * rng.randint(0, 3) + "filler text, " * rng.randint(0, 4))
            text = "".join(parts)
            for source in (text.lower(), text) if lowered else (text,):
                assert _spans(finditer(regex, source)) == _spans(regex.finditer(source)), regex.pattern[:40]
        anchored += anchors(regex) is not None
    assert anchored >= 12  # most detector regexes really take the anchored path


def test_anchored_scans_yield_what_re_yields_on_labelled_texts() -> None:
    texts = [t if len(t) >= ANCHOR_FROM else t + " \n" + t * (ANCHOR_FROM // max(len(t), 1) + 1)
             for t in _labelled_texts()]
    for regex, _lowered in _guard_regexes():
        for text in texts:
            for source in (text, text.lower()):
                assert _spans(finditer(regex, source)) == _spans(regex.finditer(source)), (regex.pattern[:40],
                                                                                          source[:80])


def _index_is_sound(index: AnchorIndex, regexes: list[tuple[re.Pattern[str], bool]], text: str) -> int:
    """Asserts every match of every regex starts where ``index`` says one may; returns the matches seen."""
    seen = 0
    for (regex, lowered), starts in zip(regexes, index.starts(text.lower(), text), strict=True):
        found = [m.start() for m in regex.finditer(text.lower() if lowered else text)]
        assert starts is None or set(found) <= set(starts), (regex.pattern[:40], text[:80])
        seen += len(found)
    return seen


def test_one_index_lookup_finds_every_match_start_of_every_regex() -> None:
    regexes = _guard_regexes()
    index = AnchorIndex(regexes)
    rng = random.Random(13)
    seen = 0
    for regex, _lowered in regexes:
        tree = list(sre_parse.parse(regex.pattern, regex.flags))
        for _ in range(25):
            parts = []
            # short texts too, and long ones, where literal sets are checked string by string
            while sum(map(len, parts)) < rng.choice((30, ANCHOR_FROM + 50, HELD_FROM + 200)):
                core = _generate(tree, rng, {})
                parts.append(rng.choice(_CONTEXT) + (core.upper() if rng.random() < 0.3 else core))
                parts.append(rng.choice(_CONTEXT) * rng.randint(0, 3) + "filler text, " * rng.randint(0, 4))
            seen += _index_is_sound(index, regexes, "".join(parts))
    assert seen > 1000  # the generator really produces matches


def test_one_index_lookup_finds_every_match_start_in_labelled_texts() -> None:
    regexes = _guard_regexes()
    index = AnchorIndex(regexes)
    assert sum(_index_is_sound(index, regexes, text) for text in _labelled_texts()) > 100


def test_an_index_says_which_regexes_cannot_match() -> None:
    regexes = [(re.compile(r"ignore\s+(?:the\s+)?rules"), True), (re.compile(r"DAN\b"), False),
               (re.compile(r"\w+ing\s+rules"), True)]  # the last one may start anywhere
    index = AnchorIndex(regexes)
    assert index.starts("please summarise this", "please summarise this") == [[], [], []]
    text = "ok. ignore the rules, DAN, bending rules"
    assert index.starts(text.lower(), text) == [[4], [22], None]


def test_in_long_texts_an_index_checks_literal_sets_string_by_string() -> None:
    # "actions" holds the rarest 3-gram of "directions" and "ruling" that of "rules", but neither string
    regex = re.compile(r"(?:ignore|skip)\s+(?:the\s+)?(?:directions|rules)")
    index = AnchorIndex([(regex, True)])
    short = "skip the actions, ruling out the rest. "
    assert index.starts(short, short) == [[0]]  # a short text: the table bits alone, a start to try
    long = short * (HELD_FROM // len(short) + 1)
    assert index.starts(long, long) == [[]]
    text = long + "then skip the rules"
    assert [m.start() for m in regex.finditer(text)] == [len(long) + 5]
    assert len(long) + 5 in (index.starts(text, text)[0] or [])
