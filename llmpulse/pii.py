"""PII detection and redaction, shared by the SDK and the processors: regexes, checksums and, when installed,
Google's phone-number metadata.

The SDK redacts with it before text leaves the process (``producers/client.py``); the processors' text guard
detects with the same patterns (``processors/core/guards/guard.py``), so both sides agree on what PII is.

Kinds, in ``PII_PATTERNS`` order:

* ``secret``: API keys and credentials by their published formats: AWS access key ids, GitHub tokens, OpenAI
  (``sk-``, ``sk-proj-``), Anthropic (``sk-ant-``), Google API keys, Slack tokens, Stripe secret and restricted
  keys and webhook secrets, and ``-----BEGIN ... PRIVATE KEY-----`` blocks (to their END line, else to the end
  of the text). A token whose body has neither a digit nor mixed case (``sk-your-key-goes-here-...``) is a
  placeholder and is left alone. Stripe publishable keys (``pk_``) are public by design and not matched.
* ``email``.
* ``iban``: a country code with that country's IBAN length, upper case, grouped by four or not, mod-97 checked.
* ``credit_card``: 12-19 digits, optional single spaces or dashes, within an issuer's range and lengths (Visa,
  Mastercard, Amex, Maestro, JCB, Discover, UnionPay, Diners, Mir), Luhn-checked; never right after a ``+``.
* ``ssn``: US, dashed or spaced, impossible area/group/serial numbers excluded.
* ``phone``: a cheap regex finds digit groups shaped like a phone number (8-15 digits, a ``+``/``00`` prefix or
  separators, no one-digit group past the second, no date or dotted-quad shape); each candidate then goes to the
  ``phonenumbers`` library (libphonenumber's metadata) with region hints for numbers written without a country
  code (``PHONE_REGIONS``: US, GB, FR, DE, AU, IN) and a leniency level (``PHONE_LENIENCY``: ``valid`` by
  default, ``possible`` or ``strict_grouping`` through ``phone_pattern``). US numbers written in the NANP
  layout, ``(555) 123-4567``, count even in the fictional 555 range. Without ``phonenumbers`` (it is the
  ``pii`` extra, not in the SDK's base install: 48 MB of metadata) the candidates are judged by shape alone:
  ``+`` followed by 8-15 digits, or the NANP layout; national formats of other countries (``020 7946 0958``)
  are then missed. ``phone_library_available()`` tells which one runs.
* ``ipv4`` (optional).

Patterns that must not start inside a word or number consume their first character and only then look behind
(a digit, then "not preceded by a word character", not the reverse): the same matches, but ``re`` then skips
ahead to candidate characters instead of trying every position (2-3x faster scans).

Patterns are deliberately conservative: a bare run of digits is never a phone number, and a card-shaped number
that fails Luhn is left alone, so order ids and timestamps survive redaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

SECRET, EMAIL, IBAN, PHONE, SSN, CREDIT_CARD, IPV4 = "secret", "email", "iban", "phone", "ssn", "credit_card", "ipv4"

PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "FR", "DE", "AU", "IN")  # tried in order for national formats
# phonenumbers Leniency levels, lower case (possible, valid, strict_grouping, exact_grouping): for numbers
# written nationally, and for numbers with a country code (the "+44" is evidence enough for a possible length).
PHONE_LENIENCY = "strict_grouping"
PHONE_INTERNATIONAL_LENIENCY = "possible"

# Quick reject: every kind contains a digit or an '@', save key blocks and the rare key without a digit; any
# text without them cannot hold PII and skips the scans.
_MAYBE_PII = re.compile(r"[\d@]|PRIVATE KEY|AKIA|ASIA|_(?:live|test)_|whsec_|gh[pousr]_|github_pat_|sk-|AIza|xox")


def may_contain_pii(text: str) -> bool:
    """False when ``text`` cannot hold any PII kind (no digit, no '@', no key block): a one-regex reject."""
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


class CardRange(NamedTuple):
    """Card numbers whose first ``len(str(low))`` digits lie in [low, high] and whose length is in ``lengths``."""

    issuer: str
    low: int
    high: int
    lengths: range


_16_19, _14_19, _12_19 = range(16, 20), range(14, 20), range(12, 20)
# Issuer identification ranges (ISO/IEC 7812 as the networks publish them). A number may fall in several.
CARD_RANGES: tuple[CardRange, ...] = (
    CardRange("visa", 4, 4, range(13, 20, 3)),  # 13, 16, 19
    CardRange("mastercard", 51, 55, range(16, 17)),
    CardRange("mastercard", 2221, 2720, range(16, 17)),
    CardRange("amex", 34, 34, range(15, 16)),
    CardRange("amex", 37, 37, range(15, 16)),
    CardRange("diners", 300, 305, _14_19),
    CardRange("diners", 3095, 3095, _14_19),
    CardRange("diners", 36, 36, _14_19),
    CardRange("diners", 38, 39, _14_19),
    CardRange("jcb", 3528, 3589, _16_19),
    CardRange("discover", 6011, 6011, _16_19),
    CardRange("discover", 644, 649, _16_19),
    CardRange("discover", 65, 65, _16_19),
    CardRange("unionpay", 62, 62, _16_19),
    CardRange("maestro", 50, 50, _12_19),
    CardRange("maestro", 56, 58, _12_19),
    CardRange("maestro", 639, 639, _12_19),
    CardRange("maestro", 6304, 6304, _12_19),
    CardRange("maestro", 67, 67, _12_19),
    CardRange("mir", 2200, 2204, _16_19),
)


def card_issuer(digits: str) -> str | None:
    """The first issuer whose range and lengths ``digits`` fits (no Luhn check), or None."""
    for card in CARD_RANGES:
        width = len(str(card.low))
        if len(digits) in card.lengths and card.low <= int(digits[:width]) <= card.high:
            return card.issuer
    return None


_CARD_GROUPS = re.compile(r"\d+")


def _card_ok(match: str) -> bool:
    if any(len(group) < 3 for group in _CARD_GROUPS.findall(match)[:-1]):  # printed in groups of 4-6, not "5 7 3"
        return False
    digits = match.replace(" ", "").replace("-", "")
    # Issuer ranges and lengths cut the Luhn lottery (1 in 10) for timestamps and ids; all-one-digit strings
    # pass Luhn but are placeholders.
    return card_issuer(digits) is not None and len(set(digits)) > 1 and luhn_valid(digits)


# IBAN length per country (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_valid(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97 check of an IBAN written without spaces, upper case."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban_ok(match: str) -> bool:
    return iban_valid(match.replace(" ", ""))


def _secret_ok(match: str) -> bool:
    # Real keys are random: a digit or both cases. Placeholders ("sk-your-api-key-here-...") are neither.
    if match.startswith(("-----BEGIN", "AKIA", "ASIA")):  # AWS ids: upper case and digits, maybe no digit
        return True
    return any(ch.isdigit() for ch in match) or (any(ch.isupper() for ch in match[4:])
                                                  and any(ch.islower() for ch in match[4:]))


@lru_cache(maxsize=1)
def _phonenumbers() -> Any:
    """The ``phonenumbers`` module, or None when the ``pii`` extra is not installed (imported on first use)."""
    try:
        import phonenumbers  # optional: the ``pii`` extra (see the module docstring)
    except ImportError:
        return None
    return phonenumbers


def phone_library_available() -> bool:
    """Whether phone candidates are judged by ``phonenumbers`` (True) or by shape alone (False)."""
    return _phonenumbers() is not None


_PHONE_GROUPS = re.compile(r"\d+")
_NANP = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")  # (555) 123-4567, 555.123.4567
# Dates, with an hour when a time follows ("2024-01-15 10:30" leaves the candidate "2024-01-15 10").
_DATE = re.compile(r"(?:\d{4}([./-])\d{1,2}\1\d{1,2}|\d{1,2}([./-])\d{1,2}\2\d{2,4})(?: \d{1,2})?")
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SSN_SHAPE = re.compile(r"\d{3}([ -])\d{2}\1\d{4}")
_TRUNK_IN_BRACKETS = re.compile(r"\(0\) ?")


def _phone_shaped(candidate: str) -> bool:
    """8-15 digits, separated or prefixed (a bare run is never a phone), no one-digit group after the second
    (``1 2 3 4 5 6 7 8``), not a date or a dotted quad."""
    groups = _PHONE_GROUPS.findall(candidate)
    digits = sum(map(len, groups))
    if not 8 <= digits <= 15 or (len(groups) == 1 and candidate[0] != "+"):
        return False
    one_digit_late = any(len(g) == 1 for g in groups[2:])
    return not (one_digit_late or _DATE.fullmatch(candidate) or _DOTTED_QUAD.fullmatch(candidate)
                or _SSN_SHAPE.fullmatch(candidate))


@lru_cache(maxsize=64)
def _trunk_prefix(region: str) -> str:
    """What a number written nationally in ``region`` starts with: "0" in most of the world ("020 7946 0958"),
    nothing where the trunk prefix is optional (NANP's "1")."""
    prefix = _phonenumbers().ndd_prefix_for_region(region, True) or ""
    return "" if prefix == "1" else prefix


class PhoneRules(NamedTuple):
    """How phone candidates are confirmed: region hints for national formats and a phonenumbers leniency."""

    regions: tuple[str, ...] = PHONE_REGIONS
    leniency: str = PHONE_LENIENCY
    international_leniency: str = PHONE_INTERNATIONAL_LENIENCY

    def accept(self, candidate: str) -> bool:
        """Whether ``candidate`` (a match of the phone outline) is a phone number under these rules."""
        return _phone_verdict(self, candidate)


# A verdict depends on the rules and the candidate only, and texts repeat numbers (signatures, contact lines):
# a phonenumbers check costs ~10 us, a cache hit ~0.1 us. Bounded, so odd traffic cannot grow it.
@lru_cache(maxsize=4096)
def _phone_verdict(rules: PhoneRules, candidate: str) -> bool:
    international = candidate.startswith(("+", "00"))
    if international:  # "+44 (0)20 7946 0958": the trunk digit in brackets is not dialled
        candidate = _TRUNK_IN_BRACKETS.sub("", candidate)
    if not _phone_shaped(candidate):
        return False
    if _NANP.fullmatch(candidate):
        return True
    library = _phonenumbers()
    if library is None:
        return candidate.startswith("+")
    chosen = rules.international_leniency if international else rules.leniency
    leniency = getattr(library.Leniency, chosen.upper())
    text = "+" + candidate[2:] if candidate.startswith("00") else candidate
    national_digits = "" if international else "".join(_PHONE_GROUPS.findall(candidate))
    for region in rules.regions[:1] if international else rules.regions:
        # Written nationally without the trunk prefix ("98765 43210" in India): only in the region's own
        # grouping, or every 10-15 digit id would be some region's number.
        strict = not international and not national_digits.startswith(_trunk_prefix(region))
        level = max(leniency, library.Leniency.EXACT_GROUPING) if strict else leniency
        for found in library.PhoneNumberMatcher(text, region, leniency=level):
            if found.start == 0 and found.end == len(text):
                return True
    return False


class PiiPattern(NamedTuple):
    kind: str
    regex: re.Pattern[str]
    accept: Callable[[str], bool] | None  # extra check on the matched text; None = every match counts

    @property
    def token(self) -> str:
        return f"[REDACTED_{self.kind.upper()}]"


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# The first octet after its first digit, in _OCTET's order of alternatives (lookbehinds read that digit).
_OCTET_TAIL = r"(?:(?<=2)5[0-5]|(?<=2)[0-4]\d|(?<=1)\d\d|(?<=[1-9])\d|)"

_SECRET = (
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{60,251}"  # GitHub classic and fine-grained
    r"|sk-ant-[a-z0-9]{2,12}-[A-Za-z0-9_-]{32,}"  # Anthropic
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}"  # OpenAI
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}"  # Stripe secret/restricted, webhook
    r")(?![A-Za-z0-9_-])"
    # A private key block to its END line, else to the end of the text (a truncated paste).
    r"|-----BEGIN[A-Z ]{0,30}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[^\x00]*?-----END[A-Z ]{0,30}PRIVATE KEY(?: BLOCK)?-----|[^\x00]*)"
)

# A phone number's outline: digit groups joined by spaces, dots, dashes or parentheses, 8 digits or more
# (checked in PhoneRules.accept with the rest). One character class, so no backtracking blow-up.
_PHONE_CANDIDATE = r"(?<![\w+.-])(?:\+|(?<!\d)00)?\(?\d[\d ().-]{6,24}\d(?![\w-])"


def phone_pattern(
    regions: Sequence[str] = PHONE_REGIONS,
    leniency: str = PHONE_LENIENCY,
    international_leniency: str = PHONE_INTERNATIONAL_LENIENCY,
) -> PiiPattern:
    """The ``phone`` pattern with other region hints or other phonenumbers leniencies (see the module doc)."""
    rules = PhoneRules(tuple(regions), leniency, international_leniency)
    return PiiPattern(PHONE, re.compile(_PHONE_CANDIDATE), rules.accept)


# Order matters for redaction: secrets first (keys hold digit runs), IBANs and cards before phones and SSNs,
# so a card's digit groups are not half-redacted as a phone number first.
PII_PATTERNS: tuple[PiiPattern, ...] = (
    PiiPattern(SECRET, re.compile(_SECRET), _secret_ok),
    PiiPattern(EMAIL, re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), None),
    PiiPattern(
        IBAN,
        re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?:(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?|[A-Z0-9]{11,30})"
                   r"(?![A-Za-z0-9])"),
        _iban_ok,
    ),
    PiiPattern(CREDIT_CARD, re.compile(r"\d(?<![\w+-]\d)(?:[ -]?\d){11,18}(?![\d-])"), _card_ok),
    PiiPattern(
        SSN, re.compile(r"\d(?<![\d-]\d)\d\d(?<!000)(?<!666)(?<!9\d\d)([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])"), None
    ),
    phone_pattern(),
    PiiPattern(IPV4, re.compile(rf"\d(?<![\d.]\d){_OCTET_TAIL}(?:\.{_OCTET}){{3}}(?![\d.])"), None),
)


def _patterns(ipv4: bool) -> tuple[PiiPattern, ...]:
    return PII_PATTERNS if ipv4 else tuple(p for p in PII_PATTERNS if p.kind != IPV4)


def mask(pattern: PiiPattern, text: str) -> tuple[str, bool]:
    """``text`` with ``pattern``'s accepted matches replaced by its token, and whether there was any."""
    accept, token, hits = pattern.accept, pattern.token, 0

    def replace(match: re.Match[str]) -> str:
        nonlocal hits
        if accept is None or accept(match.group()):
            hits += 1
            return token
        return match.group()

    masked = pattern.regex.sub(replace, text)
    return masked, hits > 0


def find_pii(text: str, *, ipv4: bool = True) -> list[str]:
    """The kinds of PII present in ``text``, in ``PII_PATTERNS`` order, each at most once.

    A kind is looked for in the text with the earlier kinds' matches redacted, as ``redact`` does: an IBAN's
    digit groups are not also a phone number.
    """
    if not may_contain_pii(text):
        return []
    found = []
    for pattern in _patterns(ipv4):
        text, hit = mask(pattern, text)
        if hit:
            found.append(pattern.kind)
    return found


def redact(text: str, *, ipv4: bool = True) -> str:
    """``text`` with every PII match replaced by ``[REDACTED_<KIND>]``; text without PII is returned as is."""
    if not may_contain_pii(text):
        return text
    for pattern in _patterns(ipv4):
        text, _ = mask(pattern, text)
    return text
