"""``TextGuard``: every text guardrail behind one batch call.

Per batch of calls (prompt and response columns, None where absent): injection runs on prompts, hallucination
risk on responses, PII and toxicity on both, length limits on both. Each detector sees only the texts that are
present, as one list, so the cost is a few regex passes and one sparse dot product per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llmpulse.processors.core.guards import join_texts, matching_docs
from llmpulse.processors.core.guards.classifier import DEFAULT_MODEL_PATH, InjectionClassifier
from llmpulse.processors.core.guards.hallucination import DOMAINS, LEVELS, assess, domain_names
from llmpulse.processors.core.guards.injection import InjectionDetector
from llmpulse.processors.core.guards.safety import DEFAULT_TOXIC_TERMS, LengthLimits, ToxicityFilter, lengths
from llmpulse.producers.pii import PII_PATTERNS, PiiPattern, may_contain_pii


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Thresholds and switches; defaults are the shipped behaviour."""

    injection_threshold: float = 0.5  # on injection_score in [0, 1]
    hallucination_min_level: str = "medium"  # the lowest level (see LEVELS) that counts as a risk
    max_prompt_chars: int = 16_000
    max_response_chars: int = 32_000
    # Regex detectors read at most this many characters of a text: its first 3/4 and last 1/4 (injections
    # hide at the end of pasted documents), so a 50 KB RAG prompt costs what a 4 KB one does.
    scan_chars: int = 4096
    detect_ipv4: bool = True
    use_classifier: bool = True  # False: regex patterns only
    model_path: Path = DEFAULT_MODEL_PATH
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


def scan_pii(texts: list[str], patterns: tuple[PiiPattern, ...]) -> list[list[str]]:
    """PII kinds per text: one regex pass per kind over the texts that may hold PII (see may_contain_pii),
    with the SDK redactor's patterns."""
    found: list[list[str]] = [[] for _ in texts]
    candidates = [i for i, text in enumerate(texts) if may_contain_pii(text)]
    if not candidates:
        return found
    for i, kinds in zip(candidates, _scan_pii([texts[i] for i in candidates], patterns), strict=True):
        found[i] = kinds
    return found


def _scan_pii(texts: list[str], patterns: tuple[PiiPattern, ...]) -> list[list[str]]:
    joined, starts = join_texts(texts)
    found: list[list[str]] = [[] for _ in texts]
    for pattern in patterns:
        if pattern.accept is None:
            docs = matching_docs(pattern.regex, joined, starts).tolist()
        else:  # validated kinds (cards, phones) are rare enough to check match by match
            hits = [m.start() for m in pattern.regex.finditer(joined) if pattern.accept(m.group())]
            docs = np.unique(np.searchsorted(starts, hits, side="right") - 1).tolist() if hits else []
        for i in docs:
            found[i].append(pattern.kind)
    return found


class TextGuard:
    """Injection, PII, hallucination, toxicity and length checks over batches of prompts and responses."""

    __slots__ = ("_pii_patterns", "_risk_level", "config", "injection", "limits", "toxicity")

    def __init__(self, config: GuardConfig | None = None) -> None:
        config = config or GuardConfig()
        self.config = config
        classifier = InjectionClassifier.load(config.model_path) if config.use_classifier else None
        self.injection = InjectionDetector(classifier)
        self.toxicity = ToxicityFilter(config.toxic_terms)
        self.limits = LengthLimits(config.max_prompt_chars, config.max_response_chars)
        self._risk_level = LEVELS.index(config.hallucination_min_level)
        self._pii_patterns = tuple(p for p in PII_PATTERNS if config.detect_ipv4 or p.kind != "ipv4")

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
        score, patterns = self._injection(prompts)
        level, domains = _hallucination(responses, self.config.scan_chars)
        pii, toxic = self._pii_and_toxicity(prompts, responses)
        too_long = (lengths(prompts) > self.limits.max_prompt_chars) | (
            lengths(responses) > self.limits.max_response_chars
        )
        return BatchGuardResult(
            injection=score >= self.config.injection_threshold,
            injection_score=score,
            injection_patterns=patterns,
            pii=pii,
            hallucination_risk=level >= self._risk_level,
            hallucination_level=level,
            domains=domains,
            toxic=toxic,
            too_long=too_long,
        )

    def _injection(self, prompts: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
        n = len(prompts)
        score = np.zeros(n)
        patterns: list[list[str]] = [[] for _ in range(n)]
        index, texts = _present(prompts, self.config.scan_chars)
        if texts:
            hits = self.injection.score(texts)
            score[index] = hits.score
            for i, names in zip(index.tolist(), hits.names, strict=True):
                patterns[i] = names
        return score, patterns

    def _pii_and_toxicity(
        self, prompts: np.ndarray, responses: np.ndarray
    ) -> tuple[list[list[str]], np.ndarray]:
        """Prompts and responses scanned in one pass, then folded back onto their calls."""
        n = len(prompts)
        p_idx, p_texts = _present(prompts, self.config.scan_chars)
        r_idx, r_texts = _present(responses, self.config.scan_chars)
        index, texts = np.concatenate((p_idx, r_idx)), p_texts + r_texts
        pii: list[list[str]] = [[] for _ in range(n)]
        toxic = np.zeros(n, dtype=bool)
        if not texts:
            return pii, toxic
        for i, kinds in zip(index.tolist(), scan_pii(texts, self._pii_patterns), strict=True):
            if kinds:  # union of prompt and response kinds, kept in PII_PATTERNS order
                seen = set(kinds).union(pii[i])
                pii[i] = [p.kind for p in self._pii_patterns if p.kind in seen]
        toxic[index[self.toxicity.flag(texts)]] = True
        return pii, toxic


def _hallucination(responses: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(responses)
    level = np.zeros(n, dtype=np.int8)
    domains = np.zeros((n, len(DOMAINS)), dtype=bool)
    index, texts = _present(responses, limit)
    if texts:
        risk = assess(texts)
        level[index] = risk.level
        domains[index] = risk.domains
    return level, domains
