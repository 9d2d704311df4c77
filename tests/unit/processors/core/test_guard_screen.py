"""The guards' screen: the literals it reads off patterns, and that it never drops a text a regex matches.

The soundness check generates random strings from each detector regex's own parse tree (so every branch and
repeat gets exercised, not only the examples we thought of), embeds them in random context with non-ASCII,
upper-case and NUL characters, and asserts the screen passes every text the regex really matches.
"""

from __future__ import annotations

import json
import random
import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import numpy as np
import pytest

from llmpulse.processors.core.guards import docs_matching
from llmpulse.processors.core.guards.guard import GuardConfig, TextGuard
from llmpulse.processors.core.guards.screen import (
    NON_ASCII,
    UNCONSTRAINED,
    Screen,
    Screened,
    candidate_lists,
    requirement,
)
from tests.support.shared_data import shared_data

# Characters a generated class member is drawn from: ASCII plus look-alikes and case traps.
_POOL = [chr(c) for c in range(32, 127)] + list("\t\n\xa0\u2003éßİ\u212a٣\u201c\u2018Ωж")
_CONTEXT = ["", " ", "x", "İ", "\u212a", "\0", "ok. ", " DAN", "9", "@", "\xa0", "Über "]


def _lit(*strings: str) -> frozenset[str]:
    return frozenset(strings)


# --- requirement: known answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"ab(?:cd|ef)g", ((_lit("abcdg", "abefg"),),)),
        (r"stocks?", ((_lit("stock", "stocks"),),)),
        (r"jailbreak|god\s+mode", ((_lit("jailbreak"),), (_lit("god"), _lit("mode")))),  # rarest first
        (r"#{2,}", ((_lit("##"),),)),
        (r"x?", UNCONSTRAINED),  # may match the empty string
        (r"\w+", UNCONSTRAINED),
        (r"(?i)ignore", UNCONSTRAINED),  # case-insensitive: "\u212a" matches "k", so nothing is required
    ],
)
def test_requirement_reads_literals_off_a_pattern(pattern: str, expected: tuple) -> None:
    assert requirement(re.compile(pattern), lowered=True) == expected


def test_digits_stand_for_unicode_digits_too() -> None:
    (branch,) = requirement(re.compile(r"\d{3}%"), lowered=True)
    assert set(branch) == {_lit("%"), frozenset("0123456789" + NON_ASCII)}


def test_non_ascii_literal_constrains_nothing_in_text_as_written() -> None:
    # lower-casing may turn a non-ASCII character into ASCII ("\u212a" into "k"): only the ASCII parts count
    (branch,) = requirement(re.compile("ab\u212acd"), lowered=False)
    assert set(branch) == {_lit("ab"), _lit("cd")}
    (branch,) = requirement(re.compile("ab\u212acd"), lowered=True)
    assert branch == (_lit("ab" + NON_ASCII + "cd"),)


# --- screen behaviour ---------------------------------------------------------------------------------------


def test_screen_passes_texts_with_the_literals_and_drops_the_rest() -> None:
    screen = Screen([Screened(re.compile(r"ignore\s+previous"), True), Screened(re.compile(r"\d+%"), True)])
    texts = ["please ignore the previous", "nothing to see", "up 5% today", "previous only", "", "ignore"]
    got = screen.candidates([t.lower() for t in texts])
    assert got[:, 0].tolist() == [True, False, False, False, False, False]
    assert got[:, 1].tolist() == [False, False, True, False, False, False]


def test_candidate_lists_are_per_regex_rows() -> None:
    matrix = np.array([[True, False], [False, False], [True, True]])
    assert candidate_lists(matrix) == [[0, 2], [2]]


def test_one_text_and_joined_scans_agree() -> None:
    regex = re.compile(r"ab\b")
    texts = [f"{'x' * (i % 3)}ab{' ' if i % 2 else 'c'}" for i in range(40)]
    docs = list(range(40))
    joined = docs_matching(regex, texts, docs, word_start=True)  # above JOIN_ABOVE: one joined scan
    one_by_one = [i for i in docs if docs_matching(regex, texts, [i], word_start=True)]
    assert joined == one_by_one == [i for i in docs if i % 6 == 3]  # "ab " at a word start


# --- soundness: generated matches are never dropped ---------------------------------------------------------


def _member(items: list, rng: random.Random) -> str:
    def inside(ch: str) -> bool:
        negate, hit = False, False
        for op, av in items:
            if op is sre.NEGATE:
                negate = True
            elif op is sre.LITERAL:
                hit |= ch == chr(av)
            elif op is sre.RANGE:
                hit |= av[0] <= ord(ch) <= av[1]
            elif op is sre.CATEGORY:
                name = str(av)
                test = ch.isdecimal() if "DIGIT" in name else ch.isspace() if "SPACE" in name else (
                    ch.isalnum() or ch == "_")
                hit |= (not test) if "NOT" in name else test
        return hit != negate

    choices = [ch for ch in _POOL if inside(ch)]
    return rng.choice(choices) if choices else ""


def _generate(items: list, rng: random.Random, groups: dict[int, str]) -> str:
    out = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(chr(av))
        elif op is sre.IN:
            out.append(_member(av, rng))
        elif op is sre.ANY:
            out.append(rng.choice(_POOL))
        elif op is sre.BRANCH:
            out.append(_generate(rng.choice(av[1]), rng, groups))
        elif op is sre.SUBPATTERN:
            text = _generate(av[3], rng, groups)
            if av[0] is not None:
                groups[av[0]] = text
            out.append(text)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, body = av
            count = rng.randint(low, min(high, low + 2))
            out.extend(_generate(body, rng, groups) for _ in range(count))
        elif op is sre.GROUPREF:
            out.append(groups.get(av, ""))
    return "".join(out)


def _guard_regexes() -> list[Screened]:
    guard = TextGuard(GuardConfig())
    from llmpulse.processors.core.guards import hallucination
    from llmpulse.processors.core.guards.guard import pii_screened
    from llmpulse.processors.core.guards.injection import screened

    return (screened(guard.injection.patterns) + hallucination.screened() + guard.toxicity.screened()
            + pii_screened(guard._pii_patterns))


def test_screen_never_drops_a_text_the_regex_matches() -> None:
    regexes = _guard_regexes()
    screen = Screen(regexes)
    rng = random.Random(11)
    checked = 0
    for column, (regex, lowered) in enumerate(regexes):
        tree = list(sre_parse.parse(regex.pattern, regex.flags))
        texts = []
        for _ in range(150):
            core = _generate(tree, rng, {})
            if rng.random() < 0.3:
                core = core.upper()
            texts.append(rng.choice(_CONTEXT) + core + rng.choice(_CONTEXT))
        low = [t.lower() for t in texts]
        matches = [i for i, t in enumerate(low if lowered else texts) if regex.search(t)]
        passed = screen.candidates(low)[:, column]
        assert passed[matches].all(), [texts[i] for i in matches if not passed[i]][:3]
        checked += len(matches)
    assert checked > 1500  # the generator really produces matches


def _labelled_texts() -> list[str]:
    texts = []
    for name in ("attacks.jsonl", "benign.jsonl"):
        lines = shared_data("injection", name).read_text(encoding="utf-8").split("\n")
        texts += [json.loads(line)["text"][:4096] for line in lines[:400] if line.strip()]
    return texts


def test_screen_never_drops_a_labelled_text_the_regex_matches() -> None:
    texts = _labelled_texts()
    regexes = _guard_regexes()
    low = [t.lower() for t in texts]
    passed = Screen(regexes).candidates(low)
    for column, (regex, lowered) in enumerate(regexes):
        source = low if lowered else texts
        matches = [i for i in np.flatnonzero(~passed[:, column]).tolist() if regex.search(source[i])]
        assert not matches, (regex.pattern[:40], [texts[i][:80] for i in matches[:3]])
