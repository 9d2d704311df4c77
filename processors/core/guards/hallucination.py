"""Hallucination risk of responses: claims in high-stakes domains stated without hedging.

A response is a risk when it talks about money, health, law or statistics (where a confident wrong answer
costs the most) and does not hedge. Levels:

- ``low``: no domain claim, or a claim that is hedged ("may", "typically", "consult a doctor", ...);
- ``medium``: a domain claim with no hedging;
- ``high``: a domain claim with no hedging and an explicit certainty marker ("guaranteed", "always", "100%").

This is a cheap screen for review and metrics, not a fact check: it says where a wrong answer would hurt and
the text gives no sign of doubt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from llmpulse.processors.core.guards import docs_matching
from llmpulse.processors.core.guards.screen import Screen, Screened, candidate_lists

LEVELS: tuple[str, ...] = ("low", "medium", "high")
LOW, MEDIUM, HIGH = range(len(LEVELS))
DOMAINS: tuple[str, ...] = ("financial", "medical", "legal", "statistical")


def _words(*alternatives: str) -> re.Pattern[str]:
    # Lower-case input, no leading \b: see guards.docs_matching(word_start=True).
    return re.compile(r"(?:" + "|".join(alternatives) + r")\b")


_DOMAIN_REGEXES: tuple[re.Pattern[str], ...] = (
    _words(
        r"stocks?", r"shares", r"invest(?:s|ed|ing|ment|ments|or|ors)?", r"portfolios?", r"dividends?",
        r"interest\s+rates?", r"returns?\s+on", r"roi", r"crypto(?:currency|currencies)?", r"bitcoin",
        r"bonds?", r"profits?", r"earnings", r"inflation", r"mortgages?", r"loans?", r"tax(?:es)?",
        r"retirement\s+savings", r"price\s+target", r"\d+\s*(?:dollars|usd|eur|euros)",
    ),
    _words(
        r"doses?", r"dosage", r"\d+\s*(?:mg|mcg|ml)", r"medications?", r"drugs?",
        r"prescri(?:be|bed|ption)s?", r"symptoms?", r"diagnos(?:is|es|ed|e)", r"treatments?", r"cures?",
        r"cured", r"diseases?", r"cancer", r"diabetes", r"vaccines?", r"side\s+effects?", r"therapy",
        r"surgery", r"antibiotics?", r"blood\s+pressure", r"infections?",
    ),
    _words(
        r"legal(?:ly)?", r"illegal", r"laws?", r"lawsuits?", r"statutes?", r"courts?", r"liable",
        r"liability", r"contracts?", r"sue", r"copyright", r"patents?", r"attorneys?", r"lawyers?",
        r"jurisdictions?", r"regulations?", r"gdpr", r"felony", r"misdemeanou?r", r"tenants?\s+rights",
    ),
    re.compile(
        r"\d+(?:\.\d+)?\s?%|(?:percent(?:age)?|statistic(?:s|al|ally)?|on\s+average|median"
        r"|stud(?:y|ies)\s+(?:shows?|proves?|found|confirms?)|research\s+(?:shows|proves)|surveys?"
        r"|probability|\d+\s+(?:out\s+of|in)\s+\d+|majority\s+of|correlat(?:ed|ion))\b"
    ),
)

_HEDGE = _words(
    r"may", r"might", r"could", r"possibly", r"perhaps", r"probably", r"likely", r"unlikely",
    r"approximately", r"roughly", r"estimated?", r"suggests?", r"appears?", r"seems?", r"generally",
    r"typically", r"usually", r"often", r"in\s+some\s+cases", r"it\s+depends", r"depending\s+on",
    r"can\s+vary", r"varies", r"not\s+(?:financial|medical|legal|professional)\s+advice",
    r"consult(?:ing)?\s+(?:a|an|your)", r"i'?m\s+not\s+(?:sure|certain)", r"i\s+(?:think|believe)",
    r"according\s+to", r"uncertain", r"as\s+far\s+as\s+i\s+know", r"not\s+guaranteed", r"no\s+guarantee",
)

_CERTAIN = re.compile(
    r"(?:guarantee[ds]?|definitely|certainly|always|never|proven|undoubtedly|absolutely|risk-free|no\s+risk"
    r"|without\s+(?:a|any)\s+doubt|will\s+(?:double|triple|rise|fall|increase|cure|win)|everyone\s+knows"
    r"|it\s+is\s+a\s+fact)\b|100\s?%"
)


class HallucinationRisk(NamedTuple):
    level: np.ndarray  # int8 index into LEVELS
    domains: np.ndarray  # bool (n, len(DOMAINS))


def screened() -> list[Screened]:
    """The regexes ``assess`` runs, in its order: the domains, then hedging, then certainty."""
    return [Screened(regex, lowered=True) for regex in (*_DOMAIN_REGEXES, _HEDGE, _CERTAIN)]


@lru_cache(maxsize=1)
def _screen() -> Screen:
    return Screen(screened())


def assess(
    texts: Sequence[str],
    lowered: Sequence[str] | None = None,
    candidates: Sequence[Sequence[int]] | None = None,
) -> HallucinationRisk:
    """Risk level and claim domains of each text in a batch.

    ``lowered``: the texts lower-cased, if the caller has them. ``candidates``: per regex of ``screened()``,
    the texts it may match (see ``guards.screen``); computed here when not given.
    """
    if lowered is None:
        lowered = [t.lower() for t in texts]
    if candidates is None:
        candidates = candidate_lists(_screen().candidates(lowered))
    domains = np.zeros((len(lowered), len(DOMAINS)), dtype=bool)
    for k, regex in enumerate(_DOMAIN_REGEXES):
        domains[docs_matching(regex, lowered, candidates[k], word_start=True), k] = True
    level = np.full(len(lowered), LOW, dtype=np.int8)
    # Hedging and certainty only matter where there is a claim.
    claims = np.flatnonzero(domains.any(axis=1)).tolist()
    may_hedge, may_be_certain = set(candidates[-2]), set(candidates[-1])
    hedged = set(docs_matching(_HEDGE, lowered, [i for i in claims if i in may_hedge], word_start=True))
    unhedged = [i for i in claims if i not in hedged]
    certain = [i for i in unhedged if i in may_be_certain]
    level[unhedged] = MEDIUM
    level[docs_matching(_CERTAIN, lowered, certain, word_start=True)] = HIGH
    return HallucinationRisk(level, domains)


def domain_names(row: np.ndarray) -> list[str]:
    """The names of the domains flagged in one row of ``HallucinationRisk.domains``."""
    return [name for name, hit in zip(DOMAINS, row.tolist(), strict=True) if hit]
