"""PII detection and redaction: known texts, known answers."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from llmpulse.pii import find_pii, luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "kinds", "redacted"),
    [
        ("Mail jane.doe+test@mail.example.co.uk now", ["email"], "Mail [REDACTED_EMAIL] now"),
        ("Call (555) 123-4567 or 555.987.6543", ["phone"], "Call [REDACTED_PHONE] or [REDACTED_PHONE]"),
        ("UK office +44 20 7946 0958.", ["phone"], "UK office [REDACTED_PHONE]."),
        ("My SSN is 123-45-6789", ["ssn"], "My SSN is [REDACTED_SSN]"),
        ("Visa 4111 1111 1111 1111 exp 12/29", ["credit_card"], "Visa [REDACTED_CREDIT_CARD] exp 12/29"),
        ("Amex 3782-822463-10005", ["credit_card"], "Amex [REDACTED_CREDIT_CARD]"),
        ("server at 10.0.12.255", ["ipv4"], "server at [REDACTED_IPV4]"),
        (
            "a@b.io, 5500 0000 0000 0004, 078-05-1120, +1 415 555 0132",
            ["email", "credit_card", "ssn", "phone"],
            "[REDACTED_EMAIL], [REDACTED_CREDIT_CARD], [REDACTED_SSN], [REDACTED_PHONE]",
        ),
    ],
)
def test_each_kind_is_found_and_redacted(text: str, kinds: list[str], redacted: str) -> None:
    assert find_pii(text) == kinds
    assert redact(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 2024-01-15 at 10:30.",
        "Order 4111111111111112 shipped",  # card-shaped but fails Luhn
        "Timestamp 20240115123000 and id 1234567890",
        "Version 1.2.3 costs $1,234,567.89",
        "Impossible SSNs 000-12-3456 and 666-12-3456 and 123-00-4567",
        "placeholder card 0000 0000 0000 0000",
        "",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert find_pii(text) == []
    assert redact(text) == text


def test_luhn_matches_known_numbers() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_random_digit_strings_that_fail_luhn_are_never_cards() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        digits = "4" + "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 18)))
        grouped = " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))
        expected = ["credit_card"] if luhn_valid(digits) and len(set(digits)) > 1 else []
        assert find_pii(grouped, ipv4=False) == expected, grouped


def test_ipv4_can_be_switched_off() -> None:
    assert find_pii("host 192.168.1.20", ipv4=False) == []
    assert redact("host 192.168.1.20", ipv4=False) == "host 192.168.1.20"


def test_sdk_module_does_not_need_numpy() -> None:
    # The SDK redacts before sending; an application without numpy must still import and use it.
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from llmpulse.pii import redact\n"
        "print(redact('x a@b.io'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "x [REDACTED_EMAIL]"
