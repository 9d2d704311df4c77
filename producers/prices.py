"""Per-token prices for the SDK's per-request cost cap, standard library only.

Same sources and units as the worker's pricer (processors/core/pricing.py): integer pico-dollars per token
(``$P`` per 1M tokens is ``P * 1e6`` pico-dollars), first from the overrides given (the ``models:`` table of the
worker's price file, ``{name: {input: $/M, output: $/M}}`` keyed ``provider/model`` or ``model``), then from the
``genai-prices`` catalogue when it is installed (the processor extra has it; it is not in the SDK's base
install). A pair is resolved once and cached; an unknown model has no price and the cost cap lets it through
(counted as ``unpriced`` by the gate). ``warm(provider, model)`` resolves off the caller's path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

log = logging.getLogger("llmpulse.sdk")

PICO_PER_MICRO = 1_000_000
# (input, output) pico-dollars per token, then cliff tiers ((above input tokens, input, output), ...) ascending:
# a prompt over a tier's threshold pays that tier's rates for all its tokens, as the worker prices it.
Rate = tuple[int, int, tuple[tuple[int, int, int], ...]]


def to_pico(usd_per_million: Any) -> int:
    """"$ per 1M tokens" as integer pico-dollars per token (half-even, as the worker rounds)."""
    return int((Decimal(str(usd_per_million)) * PICO_PER_MICRO).to_integral_value(rounding=ROUND_HALF_EVEN))


def cost_micros(rate: Rate, input_tokens: int, output_tokens: int) -> int:
    """Cost of a call in micro-dollars, rounded up (a cap must not under-estimate)."""
    price_in, price_out, tiers = rate
    for threshold, tier_in, tier_out in tiers:
        if input_tokens > threshold:
            price_in, price_out = tier_in, tier_out
    pico = max(input_tokens, 0) * price_in + max(output_tokens, 0) * price_out
    return -(-pico // PICO_PER_MICRO)


class PriceTable:
    """Resolved rates per (provider, model); see the module docstring."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, catalogue: bool = True) -> None:
        self._overrides = {name.lower(): (to_pico(spec["input"]), to_pico(spec["output"]), ())
                           for name, spec in (overrides or {}).items()}
        self._catalogue = catalogue
        self._rates: dict[tuple[str, str], Rate | None] = {}

    def rate(self, provider: str, model: str) -> Rate | None:
        key = (provider, model)
        try:
            return self._rates[key]
        except KeyError:
            return self.warm(provider, model)

    def warm(self, provider: str, model: str) -> Rate | None:
        if len(self._rates) > 10_000:
            self._rates.clear()  # garbage model names must not grow the cache without bound
        found = self._overrides.get(f"{provider}/{model}".lower()) or self._overrides.get(model.lower())
        if found is None and self._catalogue:
            found = _catalogue(provider, model)
        self._rates[(provider, model)] = found
        return found


def _catalogue(provider: str, model: str) -> Rate | None:
    try:
        from genai_prices import data_snapshot
    except ImportError:
        return None
    try:
        snapshot = data_snapshot.get_snapshot()
        for provider_id in (provider or None, None):
            try:
                found = snapshot.find_provider_model(model, None, provider_id, None)
            except LookupError:
                continue
            prices = found[1].get_prices(datetime.now(tz=UTC))
            rates = [getattr(prices, name) for name in ("input_mtok", "output_mtok")]
            if any(price is None for price in rates):
                return None
            starts = sorted({tier.start for p in rates for tier in getattr(p, "tiers", ())})
            tiers = tuple((start, *(to_pico(_at(p, start)) for p in rates)) for start in starts)
            return to_pico(getattr(rates[0], "base", rates[0])), to_pico(getattr(rates[1], "base", rates[1])), tiers
    except Exception:
        log.debug("llmpulse: no catalogue price for %s/%s", provider, model, exc_info=True)
    return None


def _at(price: Any, threshold: int) -> Any:
    """The price that applies above ``threshold`` input tokens."""
    applicable = getattr(price, "base", price)
    for tier in getattr(price, "tiers", ()):
        if tier.start <= threshold:
            applicable = tier.price
    return applicable
