"""``TextGuard``: every text guardrail behind one batch call.

Per batch of calls (prompt and response columns, None where absent): injection runs on prompts, hallucination
risk on responses, PII and toxicity on both, length limits on both. The present texts are lower-cased once and
screened once for every detector's regexes (``guards.screen``); each regex then scans only the texts holding
its literals, so the cost is one vectorised screen, a few short scans and one sparse dot product per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from llmpulse.pii import PII_PATTERNS, PiiPattern, mask
from llmpulse.processors.core.guards import JOIN_ABOVE, docs_matching
from llmpulse.processors.core.guards import hallucination as hallucination_regexes
from llmpulse.processors.core.guards.classifier import InjectionClassifier
from llmpulse.processors.core.guards.hallucination import DOMAINS, LEVELS, assess, domain_names
from llmpulse.processors.core.guards.injection import InjectionDetector, screened
from llmpulse.processors.core.guards.safety import DEFAULT_TOXIC_TERMS, LengthLimits, ToxicityFilter, lengths
from llmpulse.processors.core.guards.screen import Screen, Screened, candidate_lists


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardConfig:
    """Thresholds and switches; defaults are the shipped behaviour (the classifier is passed to ``TextGuard``)."""

    injection_threshold: float = 0.5  # on injection_score in [0, 1]
    hallucination_min_level: str = "medium"  # the lowest level (see LEVELS) that counts as a risk
    max_prompt_chars: int = 16_000
    max_response_chars: int = 32_000
    # Regex detectors read at most this many characters of a text: its first 3/4 and last 1/4 (injections
    # hide at the end of pasted documents), so a 50 KB RAG prompt costs what a 4 KB one does.
    scan_chars: int = 4096
    detect_ipv4: bool = True
    toxic_terms: tuple[str, ...] = DEFAULT_TOXIC_TERMS


class GuardResult(NamedTuple):
    """The verdict on one text (or one prompt/response pair)."""

    injection: bool
    injection_score: float
    injection_patterns: list[str]
    pii: list[str]
    hallucination_risk: bool
    hallucination_level: str
    domains: list[str]
    toxic: bool
    too_long: bool


@dataclass(slots=True)
class BatchGuardResult:
    """Verdicts for N calls as parallel arrays (row i is call i)."""

    injection: np.ndarray  # bool
    injection_score: np.ndarray  # float64, 0 where there is no prompt
    injection_patterns: list[list[str]]
    pii: list[list[str]]  # kinds found in the prompt or the response, in PII_PATTERNS order
    hallucination_risk: np.ndarray  # bool
    hallucination_level: np.ndarray  # int8 index into LEVELS
    domains: np.ndarray  # bool (N, len(DOMAINS))
    toxic: np.ndarray  # bool: prompt or response
    too_long: np.ndarray  # bool: prompt or response over its limit

    def __len__(self) -> int:
        return int(self.injection.shape[0])

    @property
    def has_pii(self) -> np.ndarray:
        return np.fromiter(map(bool, self.pii), dtype=bool, count=len(self.pii))

    def row(self, i: int) -> GuardResult:
        return GuardResult(
            injection=bool(self.injection[i]),
            injection_score=float(self.injection_score[i]),
            injection_patterns=list(self.injection_patterns[i]),
            pii=list(self.pii[i]),
            hallucination_risk=bool(self.hallucination_risk[i]),
            hallucination_level=LEVELS[int(self.hallucination_level[i])],
            domains=domain_names(self.domains[i]),
            toxic=bool(self.toxic[i]),
            too_long=bool(self.too_long[i]),
        )


def _window(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return text[:head] + "\n" + text[len(text) - (limit - head) :]


def _present(texts: np.ndarray, limit: int) -> tuple[np.ndarray, list[str]]:
    """Positions of the non-None texts and the texts themselves, cut to ``limit`` characters."""
    index = np.flatnonzero(np.not_equal(texts, None))
    return index, [_window(t, limit) for t in texts[index].tolist()]


def _as_objects(texts: np.ndarray | list[str | None]) -> np.ndarray:
    out = np.empty(len(texts), dtype=object)
    out[:] = list(texts)
    return out


def pii_screened(patterns: Sequence[PiiPattern]) -> list[Screened]:
    """The regexes ``scan_pii`` runs, in its order; they run on the texts as written."""
    return [Screened(p.regex, lowered=False) for p in patterns]


@lru_cache(maxsize=4)
def _pii_screen(patterns: tuple[PiiPattern, ...]) -> Screen:
    return Screen(pii_screened(patterns))


def scan_pii(
    texts: list[str], patterns: tuple[PiiPattern, ...], candidates: Sequence[Sequence[int]] | None = None
) -> dict[int, list[str]]:
    """PII kinds of the texts holding some, by position in ``texts`` (the others: none), with the patterns the SDK
    redacts with (``llmpulse.pii``), each run on the texts the screen passes.

    ``candidates``: per pattern, the texts it may match (see ``guards.screen``); computed here when not
    given. As in ``llmpulse.pii.find_pii``, a text where a kind is found has that kind's matches redacted
    before the later patterns look (an IBAN's digit groups are no phone number); redaction only removes
    matches, so the screen's candidates stay sound.
    """
    if candidates is None:
        candidates = candidate_lists(_pii_screen(patterns).candidates([t.lower() for t in texts]))
    found: dict[int, list[str]] = {}
    texts = list(texts)
    for pattern, docs in zip(patterns, candidates, strict=True):
        if len(docs) > JOIN_ABOVE:  # many candidates: one joined scan finds the few that match
            docs = docs_matching(pattern.regex, texts, docs, accept=pattern.accept)
        for i in docs:  # a few: masking is the scan (one pass, each match judged once)
            texts[i], hit = mask(pattern, texts[i])
            if hit:
                found.setdefault(i, []).append(pattern.kind)
    return found


class TextGuard:
    """Injection, PII, hallucination, toxicity and length checks over batches of prompts and responses.

    ``classifier`` is the tier-2 injection model (the shipped one: ``processors.loaders.read_injection_model()``);
    without it injection is scored by the regex patterns alone.
    """

    __slots__ = ("_columns", "_pii_patterns", "_risk_level", "_screen", "config", "injection", "limits",
                 "toxicity")

    def __init__(self, config: GuardConfig | None = None, classifier: InjectionClassifier | None = None) -> None:
        config = config or GuardConfig()
        self.config = config
        self.injection = InjectionDetector(classifier)
        self.toxicity = ToxicityFilter(config.toxic_terms)
        self.limits = LengthLimits(config.max_prompt_chars, config.max_response_chars)
        self._risk_level = LEVELS.index(config.hallucination_min_level)
        self._pii_patterns = tuple(p for p in PII_PATTERNS if config.detect_ipv4 or p.kind != "ipv4")
        # One screen for every regex; _columns: where each detector's regexes sit in its candidate lists.
        groups = (screened(self.injection.patterns), hallucination_regexes.screened(), self.toxicity.screened(),
                  pii_screened(self._pii_patterns))
        bounds = np.cumsum([0] + [len(g) for g in groups]).tolist()
        self._columns = [slice(a, b) for a, b in pairwise(bounds)]
        self._screen = Screen([regex for group in groups for regex in group])

    def check(self, text: str) -> GuardResult:
        """Every check on one text, as if it were both the prompt and the response of a call."""
        texts = _as_objects([text])
        return self.check_batch(texts, texts).row(0)

    def check_batch(self, prompts: np.ndarray, responses: np.ndarray) -> BatchGuardResult:
        """Verdicts for N calls; ``prompts`` and ``responses`` are object arrays of str or None, length N."""
        prompts, responses = _as_objects(prompts), _as_objects(responses)
        n = len(prompts)
        if len(responses) != n:
            raise ValueError(f"{n} prompts but {len(responses)} responses")
        p_idx, p_texts = _present(prompts, self.config.scan_chars)
        r_idx, r_texts = _present(responses, self.config.scan_chars)
        texts = p_texts + r_texts
        lowered = [t.lower() for t in texts]
        lists = candidate_lists(self._screen.candidates(lowered))
        inj, hal, tox, pii = (lists[c] for c in self._columns)
        m = len(p_texts)
        score, patterns = self._injection(n, p_idx, p_texts, lowered[:m], [[i for i in c if i < m] for c in inj])
        level, domains = _hallucination(n, r_idx, lowered[m:], [[i - m for i in c if i >= m] for c in hal])
        pii_kinds, toxic = self._pii_and_toxicity(n, np.concatenate((p_idx, r_idx)), texts, lowered, pii, tox[0])
        too_long = (lengths(prompts) > self.limits.max_prompt_chars) | (
            lengths(responses) > self.limits.max_response_chars
        )
        return BatchGuardResult(
            injection=score >= self.config.injection_threshold,
            injection_score=score,
            injection_patterns=patterns,
            pii=pii_kinds,
            hallucination_risk=level >= self._risk_level,
            hallucination_level=level,
            domains=domains,
            toxic=toxic,
            too_long=too_long,
        )

    def _injection(
        self, n: int, index: np.ndarray, texts: list[str], lowered: list[str], candidates: list[list[int]]
    ) -> tuple[np.ndarray, list[list[str]]]:
        score = np.zeros(n)
        patterns: list[list[str]] = [[] for _ in range(n)]
        if texts:
            hits = self.injection.score(texts, lowered, candidates)
            score[index] = hits.score
            for i, names in zip(index.tolist(), hits.names, strict=True):
                patterns[i] = names
        return score, patterns

    def _pii_and_toxicity(
        self,
        n: int,
        index: np.ndarray,
        texts: list[str],
        lowered: list[str],
        pii_candidates: list[list[int]],
        toxic_candidates: list[int],
    ) -> tuple[list[list[str]], np.ndarray]:
        """Prompts and responses scanned together, then folded back onto their calls."""
        pii: list[list[str]] = [[] for _ in range(n)]
        toxic = np.zeros(n, dtype=bool)
        if not texts:
            return pii, toxic
        for text, kinds in scan_pii(texts, self._pii_patterns, pii_candidates).items():
            i = int(index[text])  # union of prompt and response kinds, kept in PII_PATTERNS order
            seen = set(kinds).union(pii[i])
            pii[i] = [p.kind for p in self._pii_patterns if p.kind in seen]
        toxic[index[self.toxicity.flag(texts, lowered, toxic_candidates)]] = True
        return pii, toxic


def _hallucination(
    n: int, index: np.ndarray, lowered: list[str], candidates: list[list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    level = np.zeros(n, dtype=np.int8)
    domains = np.zeros((n, len(DOMAINS)), dtype=bool)
    if lowered:
        risk = assess(lowered, lowered, candidates)
        level[index] = risk.level
        domains[index] = risk.domains
    return level, domains
