"""Pricing: integer micro-dollars, overrides over the catalogue, unknown models counted, tiers honoured."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from genai_prices import Usage, calc_price

from llmpulse.processors.core.columns import NO_COST
from llmpulse.processors.core.pricing import (
    CallUsage,
    Pricer,
    Rate,
    factorize,
    parse_overrides,
    usd_per_million_to_pico,
)

PRICE_AT = datetime(2025, 9, 1, tzinfo=UTC)


def obj(*values: object) -> np.ndarray:
    return np.array(values, dtype=object)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_price_per_million_is_micro_dollars_per_token() -> None:
    pricer = Pricer(overrides=parse_overrides({"m": {"input": 3, "output": 15}}), use_catalogue=False)
    # 1000 input at $3/M = 3000 micro$, 100 output at $15/M = 1500 micro$.
    assert pricer.price("any", "m", 1000, 100) == 4500
    assert pricer.price("any", "M", 1_000_000, 0) == 3_000_000  # model names match case-insensitively


def test_sub_micro_prices_are_exact_and_rounded_once_per_call() -> None:
    pricer = Pricer(overrides=parse_overrides({"mini": {"input": 0.075, "output": 0.3}}), use_catalogue=False)
    # 7 tokens * 0.075 = 0.525 micro$ + 3 * 0.3 = 0.9 -> 1.425 -> 1 (one rounding, not two)
    assert pricer.price("p", "mini", 7, 3) == 1
    # 10 tokens * 0.075 = 0.75 + 5 * 0.3 = 1.5 -> 2.25 -> 2; 2 tokens: 0.15 + 1.5 (5 out) = 1.65 -> 2
    costs = pricer.price_batch(CallUsage(obj("p", "p"), obj("mini", "mini"), ints(10, 2), ints(5, 5), ints(0, 0)))
    assert costs.tolist() == [2, 2]
    assert costs.dtype == np.int64
    # Half a micro-dollar rounds up: 20 tokens * 0.075 = 1.5
    assert pricer.price("p", "mini", 20, 0) == 2


def test_cached_tokens_are_part_of_input_and_pay_the_cache_rate() -> None:
    pricer = Pricer(
        overrides=parse_overrides({"m": {"input": 2, "output": 8, "cached": 0.5}}), use_catalogue=False
    )
    # 1000 input of which 800 cached: 200*2 + 800*0.5 = 800; 10 output * 8 = 80
    assert pricer.price("p", "m", 1000, 10, 800) == 880
    # cached can never exceed input (bad producer data): clipped, never negative
    assert pricer.price("p", "m", 100, 0, 500) == 50


def test_override_table_wins_over_catalogue_for_its_provider_only() -> None:
    table = parse_overrides(
        {
            "gpt-4o": {"provider": "openai", "input": 2, "output": 8},
            "acme-support-llama-8b": {"input": 0.05, "output": 0.1},
        }
    )
    pricer = Pricer(table, price_at=PRICE_AT)
    negotiated = pricer.price("openai", "gpt-4o", 1_000_000, 1_000_000, 0)
    assert negotiated == 10_000_000  # $2 + $8 from the table
    list_price = pricer.price("azure", "gpt-4o", 1_000_000, 1_000_000, 0)
    assert list_price == 12_500_000  # genai-prices: $2.50 + $10
    assert pricer.price("selfhost", "acme-support-llama-8b", 2_000_000, 1_000_000) == 200_000


def test_a_price_file_path_is_refused_with_a_pointer_to_the_loader() -> None:
    with pytest.raises(TypeError, match="read_price_overrides"):
        Pricer("prices_override.yaml")  # type: ignore[arg-type]


def test_catalogue_prices_match_genai_prices_including_tiers() -> None:
    pricer = Pricer(price_at=PRICE_AT)
    rng = np.random.default_rng(7)
    pairs = [
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5"),  # tiered above 200k input tokens
        ("google", "gemini-2.5-pro"),  # tiered
        ("anthropic", "claude-3-5-haiku-latest"),
    ]
    n = 400
    pick = rng.integers(0, len(pairs), n)
    provider = obj(*(pairs[i][0] for i in pick))
    model = obj(*(pairs[i][1] for i in pick))
    inp = rng.integers(0, 400_000, n)
    out = rng.integers(0, 20_000, n)
    cached = (inp * rng.random(n)).astype(np.int64)
    costs = pricer.price_batch(CallUsage(provider, model, inp, out, cached))
    for i in range(n):
        usage = Usage(input_tokens=int(inp[i]), output_tokens=int(out[i]), cache_read_tokens=int(cached[i]))
        ref = calc_price(usage, model[i], provider_id=provider[i], genai_request_timestamp=PRICE_AT)
        expected = int((ref.total_price * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        assert costs[i] == expected, (provider[i], model[i], inp[i], out[i], cached[i])
    assert (inp > 200_000).any() and (inp < 200_000).any()  # both sides of the tier were exercised


def test_unknown_models_cost_nothing_and_are_counted() -> None:
    pricer = Pricer(price_at=PRICE_AT)
    costs = pricer.price_batch(
        CallUsage(
            obj("openai", "acme", "acme", None),
            obj("gpt-4o", "mystery-1", "mystery-1", None),
            ints(1000, 10, 10, 10),
            ints(0, 1, 1, 1),
            ints(0, 0, 0, 0),
        )
    )
    assert costs.tolist() == [2500, NO_COST, NO_COST, NO_COST]
    pricer.price("acme", "mystery-1", 1, 1)
    assert pricer.unknown_models() == {"mystery-1": 3, "(none)": 1}


def test_provider_name_unknown_to_catalogue_falls_back_to_model_match() -> None:
    pricer = Pricer(price_at=PRICE_AT)
    rate = pricer.rate("my-gateway", "gpt-4o-mini")
    assert rate is not None and rate.per_million_usd()["input"] == pytest.approx(0.15)


def test_rates_are_resolved_once_per_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmpulse.processors.core.pricing as pricing

    calls: list[tuple[str, str]] = []

    def fake(provider: str, model: str, _: datetime) -> Rate:
        calls.append((provider, model))
        return Rate(1_000_000, 1_000_000, 1_000_000, source="fake")

    monkeypatch.setattr(pricing, "_catalogue_rate", fake)
    pricer = Pricer()
    for _ in range(3):
        costs = pricer.price_batch(
            CallUsage(obj(*["p"] * 500), obj(*["m"] * 500), ints(*[1] * 500), ints(*[1] * 500), ints(*[0] * 500))
        )
        assert costs.sum() == 1000
    assert calls == [("p", "m")]


def test_fill_missing_keeps_producer_prices() -> None:
    pricer = Pricer(overrides=parse_overrides({"m": {"input": 1, "output": 1}}), use_catalogue=False)
    filled = pricer.fill_missing(
        ints(77, NO_COST), CallUsage(obj("p", "p"), obj("m", "m"), ints(10, 10), ints(10, 10), ints(0, 0))
    )
    assert filled.tolist() == [77, 20]


def test_bad_override_prices_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_overrides({"m": {"input": 1}})
    with pytest.raises(ValueError):
        usd_per_million_to_pico(-1)
    with pytest.raises(ValueError):
        usd_per_million_to_pico(5000)


def test_huge_token_counts_do_not_overflow() -> None:
    pricer = Pricer(overrides=parse_overrides({"m": {"input": 1000, "output": 1000}}), use_catalogue=False)
    cost = pricer.price_batch(CallUsage(obj("p"), obj("m"), ints(2**40), ints(2**40), ints(0)))
    assert cost.tolist() == [2 * (2**31 - 1) * 1000]  # clipped to the schema's int range, positive


def test_factorize_groups_in_first_seen_order() -> None:
    codes, keys = factorize(obj("a", "b", "a", None), obj("x", "y", "x", "z"))
    assert codes.tolist() == [0, 1, 0, 2]
    assert keys == [("a", "x"), ("b", "y"), (None, "z")]


def test_unknown_model_counts_are_bounded() -> None:
    pricer = Pricer(use_catalogue=False, max_pairs=3)
    names = obj(*(f"junk-{i}" for i in range(10)))
    pricer.price_batch(CallUsage(obj(*["p"] * 10), names, ints(*[1] * 10), ints(*[1] * 10), ints(*[0] * 10)))
    counts = pricer.unknown_models()
    assert len(counts) == 4 and counts["(other)"] == 7 and sum(counts.values()) == 10
