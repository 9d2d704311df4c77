"""PII detection and redaction: known texts, known answers."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from llmpulse.pii import card_issuer, find_pii, iban_valid, luhn_valid, phone_pattern, redact


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
        is_card = card_issuer(digits) is not None and luhn_valid(digits) and len(set(digits)) > 1
        expected = ["credit_card"] if is_card else []
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


@pytest.mark.parametrize(
    "text",
    [
        "UK office +44 20 7946 0958",
        "ring 020 7946 0958 please",
        "Tél : 01 23 45 67 89",
        "portable +33 6 12 34 56 78",
        "international prefix 0044 20 7946 0958",
        "AU mobile 0412 345 678",
        "Sydney office (02) 9876 5432",
        "+61 2 9876 5432",
        "Berlin 030 12345678",
        "+49 30 901820",
        "call 98765 43210",
        "+91 98765 43210",
        "US 415-555-0132",
    ],
)
def test_international_phone_numbers_are_found(text: str) -> None:
    assert find_pii(text) == ["phone"]
    assert "[REDACTED_PHONE]" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "meeting 2024-01-15 10:30 and 15/01/2024",
        "years 1990-2000 and 2019 2020 2021",
        "1 2 3 4 5 6 7 8 9",
        "order 20240115123000 and id 9876543210",  # bare runs of digits
        "ids 1234 5678 9012 3456",  # card-shaped, Luhn-invalid, no region's phone grouping
        "4906 0048 0461 900",  # a possible German number by length, but not how Germans write one
        "Order #AB-1234-5678-90 shipped",
    ],
)
def test_phone_look_alikes_are_left_alone(text: str) -> None:
    assert find_pii(text, ipv4=False) == []


@pytest.mark.parametrize(
    ("issuer", "number"),
    [
        ("visa", "4111 1111 1111 1111"),
        ("mastercard", "5555 5555 5555 4444"),
        ("mastercard", "2223 0031 2200 3222"),
        ("amex", "3782 822463 10005"),
        ("maestro", "5018 0000 0009"),  # 12 digits
        ("maestro", "6759 6498 2643 8453"),
        ("maestro", "6799 9901 0000 0000 019"),  # 19 digits
        ("jcb", "3530 1113 3330 0000"),
        ("jcb", "3566-0020-2036-0505"),
        ("discover", "6011 1111 1111 1117"),
        ("unionpay", "6200 0000 0000 0005"),
        ("diners", "3056 930902 5904"),  # 14 digits
        ("diners", "3600 666633 3344"),
    ],
)
def test_cards_of_every_issuer_and_length_are_found(issuer: str, number: str) -> None:
    digits = number.replace(" ", "").replace("-", "")
    assert card_issuer(digits) == issuer
    assert find_pii(f"card {number} exp 09/29", ipv4=False) == ["credit_card"]
    assert redact(f"card {number}.") == "card [REDACTED_CREDIT_CARD]."


@pytest.mark.parametrize(
    "text",
    [
        "Maestro 5018 0000 0008",  # 12 digits, Luhn-invalid
        "JCB 3530 1113 3330 0001",  # Luhn-invalid
        "id 1234 5678 9012",  # 12 digits, Luhn-valid, but no issuer issues 12 digits from 1
        "Amex-like 3782 8224 6310 0055",  # Amex range but 16 digits
    ],
)
def test_card_look_alikes_are_left_alone(text: str) -> None:
    assert find_pii(text, ipv4=False) == []


@pytest.mark.parametrize(
    "secret",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_1234567890abcdefghijABCDEFGHIJ123456",
        "github_pat_11ABCDEFG0123456789abc_" + "a1B2c3D4e5" * 6,
        "sk-" + "Ab3dEf6hIj" * 5,
        "sk-proj-AbCdEf1234567890GhIjKlMnOpQrStUvWxYz_abc-123",
        "sk-ant-api03-AbCdEf1234567890GhIjKlMnOpQrStUvWxYz_abc-123",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_test_51H8xYzAbCdEfGhIjKlMn",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq\nxyz+/ABC==\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",  # cut off: redacted to the end
    ],
)
def test_secrets_are_found_and_redacted_whole(secret: str) -> None:
    text = f"config:\n{secret}\nthanks"
    assert find_pii(text, ipv4=False) == ["secret"]
    redacted = redact(text)
    assert "[REDACTED_SECRET]" in redacted
    assert not any(part in redacted for part in ("EXAMPLE", "AbCdEf", "MIIE", "b3Bl", "4eC39", "a1B2"))


@pytest.mark.parametrize(
    "text",
    [
        "set OPENAI_API_KEY=sk-your-openai-api-key-goes-here-please",  # a placeholder: no digit, one case
        "the task-runner-uses-sk-based-scheduling",
        "use pk_live_4eC39HqLyjWDarjtT1zdp7dc in the browser",  # Stripe publishable keys are public
        "AKIA is the prefix of AWS access key ids",
        "-----BEGIN PUBLIC KEY-----",
        "ghp_short",
    ],
)
def test_secret_look_alikes_are_left_alone(text: str) -> None:
    assert find_pii(text, ipv4=False) == []


@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606",
     "NL91ABNA0417164300", "BE68 5390 0754 7034", "CH93 0076 2011 6238 5295 7"],
)
def test_ibans_are_found_and_redacted(iban: str) -> None:
    assert iban_valid(iban.replace(" ", ""))
    assert find_pii(f"IBAN: {iban}, thanks", ipv4=False) == ["iban"]
    assert redact(f"IBAN: {iban}, thanks") == "IBAN: [REDACTED_IBAN], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "IBAN DE89 3704 0044 0532 0130 01",  # checksum fails
        "DE89 3704 0044 0532 0130",  # too short for Germany
        "model XY12 ABCD 1234 5678 shipped",  # XY is no IBAN country
    ],
)
def test_iban_look_alikes_are_left_alone(text: str) -> None:
    assert find_pii(text, ipv4=False) == []


def test_every_kind_in_one_text_is_redacted() -> None:
    text = ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc, a@b.io, IBAN GB82WEST12345698765432, card 3530 1113 3330 0000, "
            "SSN 078-05-1120, tel +44 20 7946 0958")
    assert find_pii(text) == ["secret", "email", "iban", "credit_card", "ssn", "phone"]
    assert redact(text) == ("key [REDACTED_SECRET], [REDACTED_EMAIL], IBAN [REDACTED_IBAN], card "
                            "[REDACTED_CREDIT_CARD], SSN [REDACTED_SSN], tel [REDACTED_PHONE]")


def test_phone_rules_take_other_regions_and_leniency() -> None:
    only_us = phone_pattern(regions=("US",))
    assert only_us.accept is not None
    assert not only_us.accept("020 7946 0958")
    assert only_us.accept("+44 20 7946 0958")  # a country code needs no hint
    assert phone_pattern(leniency="possible").accept("+44 20 1234 5678")  # possible, not an assigned range


def test_without_phonenumbers_the_sdk_still_redacts_phones_by_shape() -> None:
    code = (
        "import sys; sys.modules['phonenumbers'] = None\n"
        "from llmpulse.pii import phone_library_available, redact\n"
        "print(phone_library_available())\n"
        "print(redact('a +44 20 7946 0958, b (555) 123-4567, c 020 7946 0958, d 4111 1111 1111 1111'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "False", "a [REDACTED_PHONE], b [REDACTED_PHONE], c 020 7946 0958, d [REDACTED_CREDIT_CARD]"]
