"""The files the worker reads at the edge: the YAML price overrides and the injection model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from llmpulse.processors.core.guards.classifier import HasherConfig, InjectionClassifier
from llmpulse.processors.core.pricing import Pricer, parse_overrides
from llmpulse.processors.loaders import (
    EXAMPLE_PRICES,
    INJECTION_MODEL,
    read_injection_model,
    read_price_overrides,
    write_injection_model,
)

PRICE_AT = datetime(2025, 9, 1, tzinfo=UTC)


def test_the_example_price_file_prices_its_models() -> None:
    pricer = Pricer(read_price_overrides(EXAMPLE_PRICES), price_at=PRICE_AT)
    assert pricer.price("openai", "gpt-4o", 1_000_000, 1_000_000, 0) == 10_000_000  # $2 + $8 from the file
    assert pricer.price("azure", "gpt-4o", 1_000_000, 1_000_000, 0) == 12_500_000  # catalogue: other provider
    assert pricer.price("selfhost", "acme-support-llama-8b", 2_000_000, 1_000_000) == 200_000


def test_a_price_file_with_or_without_the_models_key(tmp_path: Path) -> None:
    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text("m: {input: 1, output: 2}\n")
    nested.write_text("models:\n  m: {input: 1, output: 2}\n")
    expected = parse_overrides({"m": {"input": 1, "output": 2}})
    assert read_price_overrides(flat) == read_price_overrides(nested) == expected
    assert read_price_overrides(None) == {}


def test_a_bad_price_file_names_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {input: 1}\n")
    with pytest.raises(ValueError, match="'m'"):
        read_price_overrides(bad)


def test_the_shipped_model_is_read() -> None:
    assert INJECTION_MODEL.is_file()
    assert read_injection_model().config == HasherConfig()


def test_model_round_trips_through_its_file(tmp_path: Path) -> None:
    cfg = HasherConfig(bits=10)
    model = InjectionClassifier(np.random.default_rng(0).normal(size=1 << 10), 0.3, cfg)
    write_injection_model(model, tmp_path / "m.npz")
    loaded = read_injection_model(tmp_path / "m.npz")
    texts = ["some text", "another one entirely"]
    assert loaded.config == cfg
    # int8 quantisation: probabilities agree to a couple of percent
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=0.02)
