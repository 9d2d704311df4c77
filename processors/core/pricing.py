"""Price LLM calls in integer micro-dollars, a batch at a time.

Where a rate comes from, first match wins:

1. the override table (negotiated prices, self-hosted or custom models), keyed ``provider/model`` or
   ``model`` (lower case); ``processors.loaders.read_price_overrides`` reads it from the local YAML file;
2. the maintained ``genai-prices`` catalogue (provider id, else matched by model name alone);
3. nothing: the calls get ``NO_COST`` and are counted per model in ``unknown_models()``.

Rates are resolved once per (provider, model) and cached; a batch is then priced with integer numpy maths.

Units and rounding. A price of ``$P`` per 1M tokens is ``P`` micro-dollars per token; rates are kept as
integer *pico*-dollars per token (``P * 1e6``, rounded half-even, so sub-micro-dollar prices such as $0.075/M
are exact). A call's cost is ``uncached*in + output*out + cached*cache_read`` pico-dollars, computed in int64,
then rounded half-up once to micro-dollars. Token counts are clipped to [0, 2**31 - 1] and rates above
$1000/M are refused, which keeps the int64 sum far from overflow.

Token convention (OpenTelemetry GenAI, and genai-prices): ``input_tokens`` includes ``cached_tokens``; the
uncached part ``max(input - cached, 0)`` pays the input rate. Cache *writes* are not in the event schema, so
they pay the plain input rate. When an override gives no cached price, cached tokens pay the input rate.

genai-prices choices: prices are taken as of ``price_at`` (default: when the Pricer is built), so a replay of
old traffic is priced at today's list prices and time-of-day discounts are ignored. Tiered prices ("cliff":
above a prompt-size threshold every token pays the tier rate) are honoured per call, keyed on total input
tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from llmpulse.processors.core.columns import NO_COST, CallColumns

log = logging.getLogger(__name__)

PICO_PER_MICRO = 1_000_000
MAX_RATE_PICO = 1_000_000_000  # $1000 per 1M tokens
MAX_TOKENS = 2**31 - 1
_COMPONENTS = ("input", "output", "cached")
OTHER_MODELS = "(other)"  # unknown-model bucket once max_pairs distinct names are counted


@dataclass(frozen=True, slots=True)
class Rate:
    """Integer pico-dollars per token for uncached input, output and cache reads, plus cliff tiers.

    ``tiers`` are ``(threshold_input_tokens, Rate-triple)`` sorted ascending: a call whose total input tokens
    exceed a threshold pays that tier's triple for all its tokens.
    """

    input: int
    output: int
    cached: int
    source: str = "override"
    tiers: tuple[tuple[int, tuple[int, int, int]], ...] = field(default=())

    def per_million_usd(self) -> dict[str, float]:
        return {name: getattr(self, name) / 1e6 for name in _COMPONENTS}


@dataclass(frozen=True, slots=True)
class CallUsage:
    """The columns a price depends on, one row per call. ``CallColumns`` has the same names, so the worker prices
    its batches as they are; callers holding loose arrays (tests, the bench) name them here once."""

    provider: np.ndarray  # object[str | None]
    model: np.ndarray  # object[str | None]: the request model
    input_tokens: np.ndarray  # int, cached tokens included
    output_tokens: np.ndarray
    cached_tokens: np.ndarray

    @classmethod
    def rows(cls, calls: CallUsage | CallColumns, index: np.ndarray) -> CallUsage:
        """These columns of the selected calls only: a whole ``CallColumns.take`` would copy the texts too."""
        return cls(*(getattr(calls, column.name)[index] for column in fields(cls)))


def usd_per_million_to_pico(price: Decimal | float | int | str) -> int:
    """Convert "$ per 1M tokens" to integer pico-dollars per token (half-even)."""
    pico = int((Decimal(str(price)) * PICO_PER_MICRO).to_integral_value(rounding=ROUND_HALF_EVEN))
    if not 0 <= pico <= MAX_RATE_PICO:
        raise ValueError(f"price {price} per 1M tokens is outside [0, 1000]")
    return pico


def parse_overrides(models: Mapping[str, Any]) -> dict[str, Rate]:
    """The price table of ``{name: {input: $/M, output: $/M, cached: $/M (opt), provider: (opt)}}``."""
    rates: dict[str, Rate] = {}
    for name, spec in models.items():
        if not isinstance(spec, Mapping) or "input" not in spec or "output" not in spec:
            raise ValueError(f"override for {name!r} needs at least input and output prices")
        input_pico = usd_per_million_to_pico(spec["input"])
        cached = spec.get("cached")
        rate = Rate(
            input=input_pico,
            output=usd_per_million_to_pico(spec["output"]),
            cached=input_pico if cached is None else usd_per_million_to_pico(cached),
        )
        provider = spec.get("provider")
        key = f"{provider}/{name}" if provider else str(name)
        rates[key.lower()] = rate
    return rates


class Pricer:
    """Prices calls; holds the per-(provider, model) rate cache and the unknown-model counts."""

    def __init__(
        self,
        overrides: Mapping[str, Rate] | None = None,
        *,
        use_catalogue: bool = True,
        price_at: datetime | None = None,
        max_pairs: int = 10_000,
    ) -> None:
        if overrides is not None and not isinstance(overrides, Mapping):
            raise TypeError(
                f"Pricer takes a price table, not {type(overrides).__name__}: read a price file with "
                "llmpulse.processors.loaders.read_price_overrides"
            )
        self._max_pairs = (
            max_pairs  # bounds the rate cache and the unknown-model counts (garbage model names)
        )
        self._overrides: dict[str, Rate] = dict(overrides or {})
        self._use_catalogue = use_catalogue
        self._price_at = price_at or datetime.now(tz=UTC)
        self._rates: dict[tuple[str, str], Rate | None] = {}
        self._unknown: dict[str, int] = {}

    def load_catalogue(self) -> None:
        """Load the price catalogue now rather than at the first call priced from it (~0.2 s): a worker does it
        before it takes records, so its first group, and the alerts that group decides, do not wait for it."""
        if self._use_catalogue:
            _catalogue()

    def rate(self, provider: str | None, model: str | None) -> Rate | None:
        """The cached rate for one pair (None: unknown model)."""
        key = (provider or "", model or "")
        if key not in self._rates:
            if len(self._rates) >= self._max_pairs:
                self._rates.clear()  # rare: re-resolving the live pairs is cheaper than tracking recency
            self._rates[key] = self._resolve(*key)
        return self._rates[key]

    def price(
        self,
        provider: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
    ) -> int:
        """One call's cost in micro-dollars, or NO_COST."""
        usage = CallUsage(
            np.array([provider], dtype=object),
            np.array([model], dtype=object),
            np.array([input_tokens]),
            np.array([output_tokens]),
            np.array([cached_tokens]),
        )
        return int(self.price_batch(usage)[0])

    def price_batch(self, calls: CallUsage | CallColumns) -> np.ndarray:
        """Cost of every call in micro-dollars (int64); NO_COST where the model has no known price."""
        n = int(np.asarray(calls.input_tokens).shape[0])
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        codes, pairs = _pair_codes(calls)
        table = np.zeros((len(pairs), 3), dtype=np.int64)
        known = np.zeros(len(pairs), dtype=bool)
        tiered: list[int] = []
        for code, pair in enumerate(pairs):
            rate = self.rate(*pair)
            if rate is not None:
                table[code] = (rate.input, rate.output, rate.cached)
                known[code] = True
                if rate.tiers:
                    tiered.append(code)
        in_tok = np.clip(np.asarray(calls.input_tokens, dtype=np.int64), 0, MAX_TOKENS)
        out_tok = np.clip(np.asarray(calls.output_tokens, dtype=np.int64), 0, MAX_TOKENS)
        cached_tok = np.minimum(np.clip(np.asarray(calls.cached_tokens, dtype=np.int64), 0, MAX_TOKENS), in_tok)
        rates = table[codes]  # (n, 3): one gather, no per-call Python
        for code in tiered:  # few keys (long-context models); each patched with vector masks
            self._apply_tiers(rates, codes == code, in_tok, pairs[code])
        pico = (in_tok - cached_tok) * rates[:, 0] + out_tok * rates[:, 1] + cached_tok * rates[:, 2]
        micros = (pico + PICO_PER_MICRO // 2) // PICO_PER_MICRO
        hit = known[codes]
        if not hit.all():
            self._count_unknown(calls.model, codes, known)
        return np.where(hit, micros, NO_COST).astype(np.int64)

    def fill_missing(self, cost_micros: np.ndarray, calls: CallUsage | CallColumns) -> np.ndarray:
        """``cost_micros`` with the producer's NO_COST entries priced here; producer prices are kept."""
        missing = np.asarray(cost_micros) == NO_COST
        if not missing.any():
            return cost_micros
        if missing.all():  # nothing priced by the producer: the batch as it is (its columns' codes are reused)
            return self.price_batch(calls)
        out = np.array(cost_micros, dtype=np.int64, copy=True)
        out[missing] = self.price_batch(CallUsage.rows(calls, missing))
        return out

    def unknown_models(self) -> dict[str, int]:
        """Calls seen per model that could not be priced, since start."""
        return dict(self._unknown)

    # -- internals ----------------------------------------------------------------------------------------

    def _resolve(self, provider: str, model: str) -> Rate | None:
        model_key = model.lower()
        for key in (f"{provider.lower()}/{model_key}", model_key):
            if key in self._overrides:
                return self._overrides[key]
        if not self._use_catalogue or not model:
            return None
        return _catalogue_rate(provider, model, self._price_at)

    def _apply_tiers(
        self, rates: np.ndarray, rows: np.ndarray, in_tok: np.ndarray, pair: tuple[str, str]
    ) -> None:
        rate = self.rate(*pair)
        assert rate is not None
        for threshold, triple in rate.tiers:  # ascending: a later (higher) tier overwrites an earlier one
            over = rows & (in_tok > threshold)
            rates[over] = triple

    def _count_unknown(self, model: np.ndarray, codes: np.ndarray, known: np.ndarray) -> None:
        missed = ~known[codes]
        names, counts = np.unique(_as_str(np.asarray(model, dtype=object)[missed]), return_counts=True)
        for name, count in zip(names.tolist(), counts.tolist(), strict=True):
            if name not in self._unknown and len(self._unknown) >= self._max_pairs:
                name = OTHER_MODELS
            if name not in self._unknown:
                log.warning("no price for model %r: its calls are left unpriced", name)
            self._unknown[name] = self._unknown.get(name, 0) + count


def _catalogue() -> Any:
    """The genai-prices catalogue; ~0.2 s the first time in a process (kept by genai-prices afterwards)."""
    from genai_prices import data_snapshot  # import cost paid only by processes that price calls

    return data_snapshot.get_snapshot()


def _catalogue_rate(provider: str, model: str, price_at: datetime) -> Rate | None:
    """Look the pair up in genai-prices (slow: call once per pair). None when unknown or unusable."""
    snapshot = _catalogue()
    found = None
    for provider_id in (provider or None, None):  # the provider's own list, then any provider by model name
        try:
            found = snapshot.find_provider_model(model, None, provider_id, None)
            break
        except LookupError:
            continue
    if found is None:
        return None
    prices = found[1].get_prices(price_at)
    try:
        base = tuple(
            _tier_base(getattr(prices, key)) for key in ("input_mtok", "output_mtok", "cache_read_mtok")
        )
        tiers = _tiers(prices)
    except ValueError:
        log.warning("genai-prices rate for %s/%s is out of range; leaving it unpriced", provider, model)
        return None
    if base[0] is None or base[1] is None:
        return None  # not priced per token (images, audio seconds, per request): out of scope
    cached = base[0] if base[2] is None else base[2]
    return Rate(base[0], base[1], cached, source=f"genai-prices:{found[0].id}/{found[1].id}", tiers=tiers)


def _tier_base(price: Any) -> int | None:
    if price is None:
        return None
    return usd_per_million_to_pico(getattr(price, "base", price))


def _tiers(prices: Any) -> tuple[tuple[int, tuple[int, int, int]], ...]:
    """Merge the tier thresholds of the three prices into full triples per threshold."""
    parts = [getattr(prices, key) for key in ("input_mtok", "output_mtok", "cache_read_mtok")]
    thresholds = sorted({tier.start for price in parts for tier in getattr(price, "tiers", ())})
    merged = []
    for threshold in thresholds:
        triple = [_price_at_threshold(price, threshold) for price in parts]
        input_pico = triple[0] if triple[0] is not None else 0
        output_pico = triple[1] if triple[1] is not None else 0
        merged.append((threshold, (input_pico, output_pico, input_pico if triple[2] is None else triple[2])))
    return tuple(merged)


def _price_at_threshold(price: Any, threshold: int) -> int | None:
    if price is None:
        return None
    applicable = getattr(price, "base", price)
    for tier in getattr(price, "tiers", ()):
        if tier.start <= threshold:
            applicable = tier.price
    return usd_per_million_to_pico(applicable)


def factorize(*columns: np.ndarray) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Group code per row (int64, first-seen order) and the distinct value tuple of each code.

    Hash-based, with the per-row work inside C builtins (dict.fromkeys, map): on object columns it is several
    times faster than ``np.unique``, which sorts Python objects. None stays None in the keys.
    """
    n = int(columns[0].shape[0])
    lists = [np.asarray(column, dtype=object).tolist() for column in columns]
    rows: list[Any] = lists[0] if len(lists) == 1 else list(zip(*lists, strict=True))
    index = {value: code for code, value in enumerate(dict.fromkeys(rows))}
    codes = np.fromiter(map(index.__getitem__, rows), dtype=np.int64, count=n)
    keys = [(value,) for value in index] if len(lists) == 1 else list(index)
    return codes, keys


def _pair_codes(calls: CallUsage | CallColumns) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(provider, model) code per call and the pair of each code; a batch's dictionary codes are reused."""
    if isinstance(calls, CallColumns) and {"provider", "model"} <= calls.codes.keys():
        keys, codes = calls.group_by("provider", "model")
    else:
        codes, keys = factorize(calls.provider, calls.model)
    return codes, [(p or "", m or "") for p, m in keys]


def _as_str(values: np.ndarray) -> np.ndarray:
    column = np.asarray(values, dtype=object)
    missing = np.equal(column, None)
    if missing.any():
        column = column.copy()
        column[missing] = "(none)"
    return column
