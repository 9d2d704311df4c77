"""Labelled texts for PII precision and recall: each PII kind embedded in carrier sentences, and look-alikes.

No public labelled PII corpus sits in the shared data, so positives are generated here from the published
formats (national numbering plans written as people write them, issuer ranges and lengths with a valid Luhn
digit, IBANs with their check digits, provider key formats), independently of the detector's code: no
``phonenumbers`` call, no regex of ``llmpulse.pii``. Negatives are near-misses a detector must leave alone
(dates, times, order ids, Luhn-invalid and out-of-range card numbers, bad IBAN checksums, key placeholders,
version numbers, prices) and, when the shared data is present, real benign prompts (GSM8K arithmetic, Alpaca
instructions) from the injection set's held-out split.

What this measures: agreement with formats as we wrote them down. It is no substitute for a labelled corpus of
real traffic; it does catch regressions and the gap between kinds.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from typing import NamedTuple

KINDS = ("email", "phone", "ssn", "credit_card", "secret", "iban")

_CARRIERS = (
    "Please contact me at {} about the order.",
    "{}",
    "My details: {}. Thanks!",
    "Can you update the record with {} and resend the invoice?",
    "Here it is -> {} <- keep it safe",
    "Customer wrote: 'use {} for everything from now on'",
    "Hi team,\nthe value is {}\nregards",
)


class Sample(NamedTuple):
    text: str
    kinds: frozenset[str]  # the PII kinds present; empty for a negative


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _group(digits: str, sizes: Sequence[int], sep: str) -> str:
    out, start = [], 0
    for size in sizes:
        out.append(digits[start : start + size])
        start += size
    if start < len(digits):
        out.append(digits[start:])
    return sep.join(part for part in out if part)


# Phone numbers: (country code, [(national significant number builder, national grouping)]) per country.
def _uk(rng: random.Random) -> tuple[str, str, list[int]]:
    return rng.choice([("20" + rng.choice("378") + _digits(rng, 7), "0", [2, 4, 4]),  # London
                       ("7" + rng.choice("1234579") + _digits(rng, 8), "0", [4, 6]),  # mobile
                       ("161" + rng.choice("2345678") + _digits(rng, 6), "0", [3, 3, 4])])  # Manchester


def _fr(rng: random.Random) -> tuple[str, str, list[int]]:
    return (rng.choice("1234567") + rng.choice("123456789") + _digits(rng, 7), "0", [1, 2, 2, 2, 2])


def _de(rng: random.Random) -> tuple[str, str, list[int]]:
    return rng.choice([("30" + rng.choice("23456789") + _digits(rng, 7), "0", [2, 8]),  # Berlin
                       ("89" + rng.choice("23456789") + _digits(rng, 6), "0", [2, 7]),  # Munich
                       ("15" + rng.choice("12579") + _digits(rng, 8), "0", [4, 7])])  # mobile


def _au(rng: random.Random) -> tuple[str, str, list[int]]:
    return rng.choice([(rng.choice("2378") + rng.choice("3456789") + _digits(rng, 7), "0", [1, 4, 4]),
                       ("4" + rng.choice("0123456789") + _digits(rng, 7), "0", [3, 3, 3])])


def _in(rng: random.Random) -> tuple[str, str, list[int]]:
    return rng.choice([(rng.choice("6789") + _digits(rng, 9), "", [5, 5]),  # mobile, no trunk 0 in practice
                       ("11" + rng.choice("2345") + _digits(rng, 7), "0", [2, 4, 4])])  # Delhi


def _us(rng: random.Random) -> tuple[str, str, list[int]]:
    area = rng.choice("23456789") + rng.choice("0123456789") + rng.choice("0123456789")
    exchange = rng.choice("23456789") + _digits(rng, 2)
    return area + exchange + _digits(rng, 4), "", [3, 3, 4]


_COUNTRIES: dict[str, tuple[str, Callable[[random.Random], tuple[str, str, list[int]]]]] = {
    "GB": ("44", _uk), "FR": ("33", _fr), "DE": ("49", _de), "AU": ("61", _au), "IN": ("91", _in), "US": ("1", _us),
}


def phone(rng: random.Random) -> str:
    code, build = _COUNTRIES[rng.choice(list(_COUNTRIES))]
    number, trunk, sizes = build(rng)
    style = rng.randrange(4)
    if code == "1" and style < 2:
        area, rest = number[:3], number[3:]
        return rng.choice([f"({area}) {rest[:3]}-{rest[3:]}", f"{area}-{rest[:3]}-{rest[3:]}",
                           f"{area}.{rest[:3]}.{rest[3:]}", f"+1 {area} {rest[:3]} {rest[3:]}"])
    if style == 0:  # international, grouped as at home
        return f"+{code} " + _group(number, sizes, " ")
    if style == 1:  # international with the trunk digit in brackets (UK, DE, AU habit) or a 00 prefix
        return f"+{code} (0)" + _group(number, sizes, " ") if trunk else f"00{code} " + _group(number, sizes, " ")
    sep = rng.choice([" ", " ", "-", "."]) if code in ("33", "1") else " "
    return _group(trunk + number, [len(trunk) + sizes[0], *sizes[1:]], sep)  # national


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


_CARD_ISSUERS = (  # (prefixes, lengths) as the networks publish them
    (["4"], [13, 16, 19]), (["51", "52", "53", "54", "55", "2221", "2720"], [16]), (["34", "37"], [15]),
    (["5018", "5020", "5038", "6304", "6759", "6761", "6763", "6771", "679999"], list(range(12, 20))),
    (["3528", "3530", "3566", "3589"], list(range(16, 20))), (["6011", "644", "65"], list(range(16, 20))),
    (["62"], list(range(16, 20))), (["36", "300", "305", "38"], [14, 16]),
)


def card(rng: random.Random, valid: bool = True) -> str:
    prefixes, lengths = rng.choice(_CARD_ISSUERS)
    prefix, length = rng.choice(prefixes), rng.choice(lengths)
    number = _luhn_complete(prefix + _digits(rng, length - len(prefix) - 1))
    if not valid:
        number = number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)
    if length == 15:
        sizes = [4, 6, 5]
    elif length == 14:
        sizes = [4, 6, 4]
    else:
        sizes = [4] * 5
    return rng.choice([number, _group(number, sizes, " "), _group(number, sizes, "-")])


def ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    sep = rng.choice("- ")
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def email(rng: random.Random) -> str:
    user = rng.choice(["jane.doe", "j_smith", "marie+billing", "ops-team", "a.b.c", "li.wei"])
    domain = rng.choice(["example.com", "mail.example.co.uk", "corp.example.de", "uni.example.edu.au"])
    return f"{user}{rng.randint(1, 999)}@{domain}"


_ALNUM = string.ascii_letters + string.digits


def _random(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def secret(rng: random.Random) -> str:
    upper_digits = string.ascii_uppercase + string.digits
    return rng.choice([
        lambda: "AKIA" + _random(rng, 16, upper_digits),
        lambda: "ASIA" + _random(rng, 16, upper_digits),
        lambda: rng.choice("pousr").join(("gh", "_")) + _random(rng, 36),
        lambda: "github_pat_" + _random(rng, 22) + "_" + _random(rng, 59),
        lambda: "sk-" + _random(rng, 48),
        lambda: "sk-proj-" + _random(rng, 120, _ALNUM + "_-"),
        lambda: "sk-ant-api03-" + _random(rng, 93, _ALNUM + "_-") + "AA",
        lambda: "AIza" + _random(rng, 35, _ALNUM + "_-"),
        lambda: f"xoxb-{_digits(rng, 12)}-{_digits(rng, 13)}-{_random(rng, 24)}",
        lambda: "sk_live_" + _random(rng, 24),
        lambda: "rk_test_" + _random(rng, 24),
        lambda: "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(
            _random(rng, 64, _ALNUM + "+/") for _ in range(4)) + "\n-----END RSA PRIVATE KEY-----",
        lambda: "-----BEGIN OPENSSH PRIVATE KEY-----\n" + _random(rng, 70, _ALNUM + "+/"),
    ])()


_IBAN_LAYOUTS = {"DE": "8n10n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "ES": "20n", "IT": "1a10n12c",
                 "BE": "12n", "CH": "5n12c", "PL": "24n", "SE": "20n"}


def _bban(rng: random.Random, layout: str) -> str:
    out, count = [], ""
    for ch in layout:
        if ch.isdigit():
            count += ch
            continue
        alphabet = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}[ch]
        out.append(_random(rng, int(count), alphabet))
        count = ""
    return "".join(out)


def iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(list(_IBAN_LAYOUTS))
    bban = _bban(rng, _IBAN_LAYOUTS[country])
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:  # any check digits of another residue mod 97 fail
        check = rng.choice([c for c in range(2, 99) if c % 97 != check % 97])
    value = f"{country}{check:02d}{bban}"
    return rng.choice([value, " ".join(value[i : i + 4] for i in range(0, len(value), 4))])


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "email": email, "phone": phone, "ssn": ssn, "credit_card": card, "secret": secret, "iban": iban,
}


def _near_miss(rng: random.Random) -> str:
    return rng.choice([
        lambda: f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        lambda: f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}",
        lambda: f"order {_digits(rng, rng.randint(8, 20))}",
        lambda: f"order #{rng.choice(['A', 'ORD', 'INV'])}-{_digits(rng, 4)}-{_digits(rng, 4)}-{_digits(rng, 2)}",
        lambda: f"ticket {_digits(rng, 4)} {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"timestamp {rng.randint(1_600_000_000_000, 1_800_000_000_000)}",
        lambda: f"card {card(rng, valid=False)}",  # Luhn fails
        lambda: f"IBAN {iban(rng, valid=False)}",  # checksum fails
        lambda: f"version {rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
        lambda: f"total ${rng.randint(1, 999)},{_digits(rng, 3)}.{_digits(rng, 2)}",
        lambda: f"years {rng.randint(1950, 2000)}-{rng.randint(2001, 2030)}",
        lambda: "export OPENAI_API_KEY=sk-your-api-key-here-replace-me-now",
        lambda: f"scores {' '.join(str(rng.randint(1, 9)) for _ in range(rng.randint(8, 12)))}",
        lambda: f"coordinates {rng.uniform(-90, 90):.6f}, {rng.uniform(-180, 180):.6f}",
        lambda: f"SKU {rng.choice(string.ascii_uppercase)}{rng.choice(string.ascii_uppercase)}{_digits(rng, 2)} "
                f"{_random(rng, 4, string.ascii_uppercase)} {_digits(rng, 4)}",
    ])()


def samples(n_per_kind: int, seed: int = 0, benign: Sequence[str] = ()) -> list[Sample]:
    """``n_per_kind`` positives of each kind, as many near-misses, and the ``benign`` texts as negatives."""
    rng = random.Random(seed)
    out = []
    for kind in KINDS:
        for _ in range(n_per_kind):
            out.append(Sample(rng.choice(_CARRIERS).format(_GENERATORS[kind](rng)), frozenset((kind,))))
    for _ in range(n_per_kind * len(KINDS)):
        out.append(Sample(rng.choice(_CARRIERS).format(_near_miss(rng)), frozenset()))
    out.extend(Sample(text, frozenset()) for text in benign)
    return out
