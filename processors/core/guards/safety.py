"""Toxicity word list and length limits.

The default list is small and deliberate: insults aimed at a person, profanity used as abuse, and threats or
incitement to violence or self-harm. Single words that are mostly harmless in context ("kill" a process,
"hate" waiting, "die" in a loop) are listed only inside phrases. Matching is whole-word and case-insensitive,
with simple plural / -ing / -ed endings, so "skill" or "Scunthorpe" never match. It is a first-line screen;
callers needing nuance pass their own ``terms``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.guards import docs_matching
from llmpulse.processors.core.guards.screen import Screen, Screened, candidate_lists

DEFAULT_TOXIC_TERMS: tuple[str, ...] = (
    # insults aimed at a person
    "idiot", "moron", "imbecile", "retard", "dumbass", "dipshit", "scumbag", "loser", "worthless piece",
    "stupid bitch", "bitch", "bastard", "asshole", "jackass", "douchebag", "cunt", "twat", "wanker",
    # profanity as abuse
    "fuck you", "fuck off", "go to hell", "piece of shit", "motherfucker", "shut the fuck up",
    # threats, incitement to violence or self-harm
    "kill yourself", "kys", "i will kill you", "i'll kill you", "hope you die", "go die", "die in a fire",
    "i will hurt you", "beat you up", "slit your throat",
    # dehumanising language
    "subhuman", "vermin", "human garbage",
)

_SUFFIX = r"(?:s|es|ed|ing)?"


def compile_terms(terms: Sequence[str]) -> re.Pattern[str]:
    """One whole-word regex, for lower-cased text, over words or phrases (spaces match any whitespace)."""
    if not terms:
        return re.compile(r"(?!)")  # matches nothing
    parts = sorted((re.escape(t.lower()).replace(r"\ ", r"[^\S\x00]+") for t in terms), key=len, reverse=True)
    # Lower-case input, no leading \b: see guards.docs_matching(word_start=True).
    return re.compile(r"(?:" + "|".join(parts) + r")" + _SUFFIX + r"\b")


class ToxicityFilter:
    """Flags texts containing any listed term."""

    __slots__ = ("_screen", "regex")

    def __init__(self, terms: Sequence[str] = DEFAULT_TOXIC_TERMS) -> None:
        self.regex = compile_terms(terms)
        self._screen: Screen | None = None  # built on first use: TextGuard screens with its own

    def screened(self) -> list[Screened]:
        return [Screened(self.regex, lowered=True)]

    def flag(
        self,
        texts: Sequence[str],
        lowered: Sequence[str] | None = None,
        candidates: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Bool per text. ``lowered``: the texts lower-cased; ``candidates``: the texts the screen passed."""
        if lowered is None:
            lowered = [t.lower() for t in texts]
        if candidates is None:
            if self._screen is None:
                self._screen = Screen(self.screened())
            candidates = candidate_lists(self._screen.candidates(lowered))[0]
        out = np.zeros(len(lowered), dtype=bool)
        out[docs_matching(self.regex, lowered, candidates, word_start=True)] = True
        return out


@dataclass(frozen=True, slots=True)
class LengthLimits:
    """Maximum lengths in characters; longer texts are flagged ``too_long`` (not truncated)."""

    max_prompt_chars: int = 16_000
    max_response_chars: int = 32_000


def lengths(texts: np.ndarray) -> np.ndarray:
    """Character length of each element of an object array; None counts as 0."""
    return np.fromiter((len(t) if t is not None else 0 for t in texts), dtype=np.int64, count=len(texts))
