"""Regex PII detection and redaction, shared by the SDK and the processors: pure Python, standard library only.

The SDK redacts with it before text leaves the process (``producers/client.py``); the processors' text guard
detects with the same patterns (``processors/core/guards/guard.py``), so both sides agree on what PII is.

Kinds: ``email``; ``phone`` (US with separators, or international starting with ``+``); ``ssn`` (US, dashed
or spaced, impossible area/group/serial numbers excluded); ``credit_card`` (13-19 digits, optional single
spaces or dashes, a card network's leading digits, Luhn-checked); ``ipv4`` (optional). Patterns are
deliberately conservative: a bare run of digits is never a phone number, and a card-shaped number that fails
Luhn is left alone, so order ids and timestamps survive redaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

EMAIL, PHONE, SSN, CREDIT_CARD, IPV4 = "email", "phone", "ssn", "credit_card", "ipv4"

# Quick reject: every kind contains a digit or an '@'; most prose has neither in a long stretch, but any text
# without them at all cannot hold PII and skips the five scans.
_MAYBE_PII = re.compile(r"[\d@]")


def may_contain_pii(text: str) -> bool:
    """False when ``text`` cannot hold any PII kind (no digit, no '@'): a one-regex reject before five scans."""
    return bool(text) and _MAYBE_PII.search(text) is not None


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    digits = match.replace(" ", "").replace("-", "")
    # Issuer prefixes (Amex/Diners/JCB 3, Visa 4, Mastercard 51-55 and 2221-2720, Discover/UnionPay 6) halve
    # the Luhn lottery for timestamps and ids; all-one-digit strings pass Luhn but are placeholders.
    issuer = digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720
    return 13 <= len(digits) <= 19 and issuer and len(set(digits)) > 1 and luhn_valid(digits)


def _phone_ok(match: str) -> bool:
    return 8 <= sum(ch.isdigit() for ch in match) <= 15


class PiiPattern(NamedTuple):
    kind: str
    regex: re.Pattern[str]
    accept: Callable[[str], bool] | None  # extra check on the matched text; None = every match counts

    @property
    def token(self) -> str:
        return f"[REDACTED_{self.kind.upper()}]"


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

# Order matters for redaction: cards before phones and SSNs, so a card's digit groups are not half-redacted
# as a phone number first.
PII_PATTERNS: tuple[PiiPattern, ...] = (
    PiiPattern(EMAIL, re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), None),
    PiiPattern(CREDIT_CARD, re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card_ok),
    PiiPattern(
        SSN, re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])"), None
    ),
    PiiPattern(
        PHONE,
        re.compile(
            r"(?<![\w+])(?:"
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # international: +44 20 7946 0958, +33 (1) 23 45 67 89
            r"|(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # US: (555) 123-4567, 555.123.4567
            r")(?![\w-])"
        ),
        _phone_ok,
    ),
    PiiPattern(IPV4, re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.])"), None),
)


def _patterns(ipv4: bool) -> tuple[PiiPattern, ...]:
    return PII_PATTERNS if ipv4 else tuple(p for p in PII_PATTERNS if p.kind != IPV4)


def find_pii(text: str, *, ipv4: bool = True) -> list[str]:
    """The kinds of PII present in ``text``, in ``PII_PATTERNS`` order, each at most once."""
    if not may_contain_pii(text):
        return []
    found = []
    for pattern in _patterns(ipv4):
        for match in pattern.regex.finditer(text):
            if pattern.accept is None or pattern.accept(match.group()):
                found.append(pattern.kind)
                break
    return found


def redact(text: str, *, ipv4: bool = True) -> str:
    """``text`` with every PII match replaced by ``[REDACTED_<KIND>]``; text without PII is returned as is."""
    if not text or not _MAYBE_PII.search(text):
        return text
    for pattern in _patterns(ipv4):
        accept = pattern.accept
        token = pattern.token
        if accept is None:
            text = pattern.regex.sub(token, text)
        else:
            text = pattern.regex.sub(lambda m, a=accept, t=token: t if a(m.group()) else m.group(), text)
    return text
