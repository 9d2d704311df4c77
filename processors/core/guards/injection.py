"""Tier-1 prompt-injection detector: eleven named regex patterns, each with a severity.

A batch is lower-cased once; ``guards.screen`` picks, per pattern, the texts holding its literals, and the
pattern runs on those only (``guards.docs_matching``), so ordinary prompts cost one vectorised screen. One text
alone (the SDK's input guard) takes one ``anchors.AnchorIndex`` lookup instead, which also tells each pattern
where in the text it may start.
Patterns are written in lower case and match at word starts only (``guards.docs_matching``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from llmpulse.processors.core.guards import docs_matching, text_matches
from llmpulse.processors.core.guards.anchors import AnchorIndex
from llmpulse.processors.core.guards.classifier import InjectionClassifier
from llmpulse.processors.core.guards.decoding import decoded_payloads, with_decoded
from llmpulse.processors.core.guards.screen import Screen, Screened, candidate_lists

SEVERITY_SCORE: dict[str, float] = {"low": 0.4, "medium": 0.7, "high": 0.95}

_S = r"[^\S\x00]+"  # whitespace that never crosses a text boundary
_ANY = r"[^\x00]{0,40}?"  # a short gap within one text


class InjectionPattern(NamedTuple):
    name: str
    severity: str  # key of SEVERITY_SCORE
    regex: re.Pattern[str]  # run on lower-cased text
    cased: re.Pattern[str] | None = None  # run on the original text, for names that are only telling in caps


def _p(name: str, severity: str, pattern: str, cased: str | None = None) -> InjectionPattern:
    # "_S" is a placeholder for whitespace within one text, so the regexes below stay readable.
    expanded = pattern.replace("_S?", "(?:_S)?").replace("_S", _S)
    return InjectionPattern(name, severity, re.compile(expanded), re.compile(cased) if cased else None)


# Each pattern names one tactic; regexes stay narrow so a benign prompt needs the tactic's wording to match.
PATTERNS: tuple[InjectionPattern, ...] = (
    _p("instruction_override", "high",
       r"(?:ignore|disregard|forget|skip|override|bypass)_S(?:(?:all|any|the|your|my|of|these|those)_S)*"
       r"(?:previous|prior|above|earlier|preceding|initial|original|system|old)_S(?:and_S\w+_S)?"
       r"(?:instructions?|prompts?|rules|directions|directives|guidelines|messages?|commands?)"
       r"|(?:ignore|disregard)_S(?:\w+_S){0,3}(?:instructions|directives|guidelines|prompts)\b"),
    _p("new_instructions", "medium",
       r"(?:new|updated|real|actual)_S(?:system_S)?instructions?_S?:"
       rf"|from_Snow_Son\b{_ANY}\byou(?:_Sare|_Swill|'re|_Smust|_Sshall)\b"),
    _p("role_manipulation", "medium",
       r"you_Sare_S(?:now|no_Slonger)\b"
       r"|(?:act|behave|respond)_Sas_S(?:if_Syou_S(?:are|were)_S)?(?:an?_S)?"
       r"(?:unrestricted|unfiltered|uncensored|evil|jailbroken|amoral|rogue)"
       r"|pretend_S(?:to_Sbe_S(?:an?_S)?(?:ai|assistant|chatbot|model)|you_Sare_S(?:an?_S)?(?:ai|unrestricted))"),
    _p("jailbreak_persona", "high",
       r"do_Sanything_Snow\b|developer_Smode\b|jailbr(?:eak|oken)\b|god_Smode\b"
       r"|anti-?gpt\b|evil_Sconfidant\b",
       cased=r"DAN\b"),  # "Do Anything Now"; "Dan" and "dan" are names and words
    _p("prompt_extraction", "high",
       r"(?:reveal|show|print|repeat|output|display|tell_Sme|give_Sme|leak|what_S(?:is|are|was))_S"
       r"(?:me_S)?(?:your|the)_S(?:system_Sprompt|(?:initial|original|hidden|secret|first)_S(?:prompt|instructions)"
       r"|password|pass_Scode|secret_S(?:key|code|word))"
       r"|(?:repeat|print|output|reveal|format|translate|convert|rewrite|list|share|summari[sz]e|show|display"
       r"|recite|dump|spell_Sout)_S(?:\w+_S){0,3}"
       r"(?:(?:your|previous|prior|above|preceding|initial|original|system|hidden|secret)_S"
       r"(?:instructions|rules|ruleset|prompt|directives|commands)"
       r"|(?:text|words|everything|instructions|rules|prompt|commands)_S(?:so_Sfar|above|before))"
       r"|repeat_Severything_Sin_S(?:the|your)_S(?:system_S)?prompt"),
    _p("fake_delimiter", "high",
       r"<\|im_(?:start|end)\|>|<\|(?:system|endoftext|assistant)\|>|\[/?(?:system|inst)\]|<</?sys>>"
       r"|(?:^|(?<=[\n\x00]))[^\S\x00]*#{2,}_S?(?:system|instructions?|new_Stask)\b|-{3,}_S?end_Sof_S(?:prompt|instructions)"
       r"|%{3,}_S?end_S(?:of_S)?(?:user|prompt|input)"),
    _p("memory_manipulation", "medium",
       r"(?:forget|erase|clear|reset|wipe)_S(?:everything|all_Syou|your_S(?:memory|context|training|programming"
       r"|instructions|guidelines))"
       r"|your_S(?:previous_S)?(?:memory|context)_S(?:has_Sbeen|is_Snow|was)_S(?:reset|cleared|erased|wiped)"),
    _p("restriction_removal", "medium",
       r"(?:without|free_S(?:of|from)|no_Slonger_Sbound_Sby)_S(?:any_S)?(?:restrictions|filters?|filtering"
       r"|limitations|censorship|guidelines|content_Spolic(?:y|ies)|ethical_S(?:guidelines|constraints))\b"
       r"|do(?:es)?(?:_Snot|n't)_S(?:have_Sto_S)?(?:follow|abide_Sby|adhere_Sto|comply_Swith)_S(?:any_S)?"
       r"(?:rules|polic(?:y|ies)|guidelines|restrictions)"),
    _p("safety_bypass", "high",
       r"(?:bypass|disable|override|circumvent|turn_Soff|ignore|break)_S(?:(?:your|the|all|any|its)_S)*"
       r"(?:safety|content|openai|ethical|moral|security)_S(?:filters?|polic(?:y|ies)|guidelines|restrictions"
       r"|protocols|settings|measures|rules)"),
    _p("obfuscation", "low",
       r"(?:base64|rot13|rot-13|hex)[-\s]*(?:encoded|decode[ds]?)\b"
       r"|decode_S(?:this|the_Sfollowing)\b|execute_Sthe_Sfollowing_S(?:code|instructions)\b"),
    _p("output_hijack", "medium",
       r"(?:say|print|output|write|respond_Swith|reply_Swith|answer_Swith"
       r"|(?:begin|start)_S(?:your_S)?(?:reply|response|answer)_Swith)_S"
       r"(?:only_S)?(?:the_S(?:words?|phrase)_S)?[\"'\u201c\u2018]?_S?access_Sgranted\b|i_Shave_Sbeen_Spwned\b"),
)


class PatternHits(NamedTuple):
    score: np.ndarray  # float64 in [0, 1]: the highest severity matched, 0 when none
    names: list[list[str]]  # per text, the names of the patterns that matched, in PATTERNS order


def screened(patterns: Sequence[InjectionPattern]) -> list[Screened]:
    """The regexes ``scan`` runs, in its order: each pattern's, then its cased one if any."""
    out = []
    for p in patterns:
        out.append(Screened(p.regex, lowered=True))
        if p.cased is not None:
            out.append(Screened(p.cased, lowered=False))
    return out


@lru_cache(maxsize=8)
def _screen(patterns: tuple[InjectionPattern, ...]) -> Screen:
    return Screen(screened(patterns))


@lru_cache(maxsize=8)
def _index_of(patterns: tuple[InjectionPattern, ...]) -> AnchorIndex:
    return AnchorIndex(screened(patterns))


# The indexes of the last few pattern tuples, by identity (each kept alive here, so its id stays its own):
# hashing a tuple of compiled regexes for ``_index_of``'s cache costs ~5 us, a tenth of a short prompt's scan.
_INDEX_BY_ID: dict[int, tuple[tuple[InjectionPattern, ...], AnchorIndex]] = {}


def _index(patterns: tuple[InjectionPattern, ...]) -> AnchorIndex:
    entry = _INDEX_BY_ID.get(id(patterns))
    if entry is None:
        if len(_INDEX_BY_ID) >= 8:
            _INDEX_BY_ID.clear()
        entry = _INDEX_BY_ID[id(patterns)] = (patterns, _index_of(patterns))
    return entry[1]


def _matched(
    texts: Sequence[str],
    lowered: Sequence[str],
    patterns: Sequence[InjectionPattern],
    candidates: Sequence[Sequence[int]],
) -> list[list[int]]:
    """Per pattern, the texts it matches, each regex run on its candidates."""
    columns = iter(candidates)
    out = []
    for pattern in patterns:
        docs = docs_matching(pattern.regex, lowered, next(columns), word_start=True)
        if pattern.cased is not None:
            docs = sorted(set(docs).union(docs_matching(pattern.cased, texts, next(columns), word_start=True)))
        out.append(docs)
    return out


def _scan_one(text: str, lowered: str, patterns: tuple[InjectionPattern, ...]) -> tuple[float, list[str]]:
    """``scan`` of one text in plain floats and lists: one ``AnchorIndex`` lookup tells every regex where it may
    start. The highest severity matched (0 when none), and the names matched in ``patterns`` order."""
    starts = iter(_index(patterns).starts(lowered, text))
    score = 0.0
    names = []
    for pattern in patterns:
        where = next(starts)
        hit = where != [] and text_matches(pattern.regex, lowered, word_start=True, starts=where)
        if pattern.cased is not None:
            where = next(starts)
            hit = hit or (where != [] and text_matches(pattern.cased, text, word_start=True, starts=where))
        if hit:
            names.append(pattern.name)
            score = max(score, SEVERITY_SCORE[pattern.severity])
    return score, names


def scan(
    texts: Sequence[str],
    patterns: Sequence[InjectionPattern] = PATTERNS,
    lowered: Sequence[str] | None = None,
    candidates: Sequence[Sequence[int]] | None = None,
) -> PatternHits:
    """Match every pattern against a batch of texts.

    ``lowered``: the texts lower-cased, if the caller has them. ``candidates``: per regex of
    ``screened(patterns)``, the texts it may match (see ``guards.screen``); computed here when not given (for
    one text, with ``anchors.AnchorIndex``).
    """
    if lowered is None:
        lowered = [t.lower() for t in texts]
    if candidates is None and len(texts) == 1:  # the SDK's case
        score_one, names_one = _scan_one(texts[0], lowered[0], tuple(patterns))
        return PatternHits(np.array([score_one]), [names_one])
    if candidates is None:
        candidates = candidate_lists(_screen(tuple(patterns)).candidates(lowered))
    matched = _matched(texts, lowered, patterns, candidates)
    score = np.zeros(len(texts))
    names: list[list[str]] = [[] for _ in texts]
    for pattern, docs in zip(patterns, matched, strict=True):
        severity = SEVERITY_SCORE[pattern.severity]
        for i in docs:
            names[i].append(pattern.name)
            score[i] = max(score[i], severity)
    return PatternHits(score, names)


def _merged(hits: PatternHits, changed: Sequence[int], extra: PatternHits, order: Sequence[str]) -> PatternHits:
    """``hits`` with ``extra`` (the scan of texts ``changed``) folded in: the higher score, names in ``order``."""
    score = hits.score.copy()
    names = list(hits.names)
    for k, i in enumerate(changed):
        score[i] = max(score[i], extra.score[k])
        if extra.names[k]:
            seen = set(names[i]).union(extra.names[k])
            names[i] = [name for name in order if name in seen]
    return PatternHits(score, names)


class InjectionDetector:
    """Both tiers: ``score`` is the larger of the pattern severity and the classifier's probability.

    The max keeps each tier's evidence intact: a high-severity pattern flags even a text the classifier has
    never seen the like of, and the classifier catches paraphrases no regex anticipates. Both tiers also read
    what a text's binary, hex or base64 runs decode to (``guards.decoding``), appended to the text.
    """

    __slots__ = ("classifier", "patterns")

    def __init__(
        self, classifier: InjectionClassifier | None, patterns: Sequence[InjectionPattern] = PATTERNS
    ) -> None:
        self.classifier = classifier
        self.patterns = tuple(patterns)

    def score(
        self,
        texts: Sequence[str],
        lowered: Sequence[str] | None = None,
        candidates: Sequence[Sequence[int]] | None = None,
    ) -> PatternHits:
        """Both tiers on a batch; ``lowered`` and ``candidates`` as for ``scan``."""
        if len(texts) == 1 and candidates is None:  # the SDK's case
            score, names = self.score_one(texts[0], None if lowered is None else lowered[0])
            return PatternHits(np.array([score]), [names])
        hits = scan(texts, self.patterns, lowered, candidates)
        decoded, changed = with_decoded(texts)
        if changed:
            extra = scan([decoded[i] for i in changed], self.patterns)
            hits = _merged(hits, changed, extra, [p.name for p in self.patterns])
        if self.classifier is None or not len(texts):
            return hits
        return PatternHits(np.maximum(hits.score, self.classifier.predict_proba(decoded)), hits.names)

    def score_one(self, text: str, lowered: str | None = None) -> tuple[float, list[str]]:
        """``score`` of one text (the SDK's input guard) as a float and the names matched, without a batch's
        arrays: the same values, to the last bit."""
        score, names = _scan_one(text, text.lower() if lowered is None else lowered, self.patterns)
        payloads = decoded_payloads(text)
        if payloads:  # as with_decoded and _merged do for a batch
            text = "\n".join([text, *payloads])
            extra_score, extra_names = _scan_one(text, text.lower(), self.patterns)
            score = max(score, extra_score)
            if extra_names:
                seen = set(names).union(extra_names)
                names = [p.name for p in self.patterns if p.name in seen]
        if self.classifier is None:
            return score, names
        return max(score, self.classifier.probability(text)), names
