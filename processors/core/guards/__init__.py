"""Text guardrails cheap enough for a stream: prompt injection, PII, hallucination risk, toxicity, length.

The facade is ``guards.guard.TextGuard``. Every detector is a few regexes; ``guards.screen`` first finds, for
all of them at once, the texts that contain their required literals, and each regex then runs only on those
(``docs_matching``). Where many texts remain, they are joined with NUL separators and scanned in one pass (no
detector pattern matches a NUL, so no match spans two texts), and match offsets are mapped back to texts with
a binary search. A scan tries the regex only where one of its leading literals may start (``guards.anchors``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from llmpulse.processors.core.guards.anchors import finditer

# Above this many candidate texts one joined scan beats a scan per text: joining and mapping offsets back
# costs ~10 us, a scan per text ~1 us of call overhead (measured break-even: 8-12 short texts).
JOIN_ABOVE = 8


def join_texts(texts: Sequence[str], lower: bool = False) -> tuple[str, np.ndarray]:
    """Texts (lower-cased if asked) joined with NULs, and each text's start offset in the joined string.

    Detectors lower-case once and compile without IGNORECASE, which makes ``re`` scans 2-4x faster.
    """
    if lower:  # per text, since lower() may change a text's length ("\u0130" becomes two code points)
        texts = [t.lower() for t in texts]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    return "\0".join(texts), starts


def _word_start(joined: str, position: int) -> bool:
    return position == 0 or not (joined[position - 1].isalnum() or joined[position - 1] == "_")


def docs_matching(
    regex: re.Pattern[str],
    texts: Sequence[str],
    docs: Sequence[int],
    word_start: bool = False,
    accept: Callable[[str], bool] | None = None,
) -> list[int]:
    """Those of ``docs`` (ascending indices into ``texts``) in whose text ``regex`` matches.

    ``word_start``: keep only matches not preceded by a word character. That is a leading ``\b`` checked
    per match instead of in the pattern, where it would disable the engine's first-character prefilter
    (3-4x slower scans); matches are rare, so the per-match check costs little. ``accept``: a match counts
    only if it accepts the matched text. Scanning a text alone or inside a NUL-joined batch finds the same
    matches: a NUL and a string boundary look alike to every pattern here.
    """
    if len(docs) > JOIN_ABOVE:
        joined, starts = join_texts([texts[i] for i in docs])
        found = [m.start() for m in finditer(regex, joined) if _counts(m, joined, word_start, accept)]
        hit = np.unique(np.searchsorted(starts, found, side="right") - 1).tolist() if found else []
        return [docs[i] for i in hit]
    return [i for i in docs if text_matches(regex, texts[i], word_start, accept)]


def text_matches(
    regex: re.Pattern[str],
    text: str,
    word_start: bool = False,
    accept: Callable[[str], bool] | None = None,
    starts: list[int] | None = None,
) -> bool:
    """Whether ``regex`` matches in ``text``, ``word_start`` and ``accept`` as for ``docs_matching``.

    ``starts``: ascending positions where every match starts, if known (``anchors.AnchorIndex``).
    """
    return any(_counts(m, text, word_start, accept) for m in finditer(regex, text, starts))


def _counts(match: re.Match[str], text: str, word_start: bool, accept: Callable[[str], bool] | None) -> bool:
    return (not word_start or _word_start(text, match.start())) and (accept is None or accept(match.group()))
