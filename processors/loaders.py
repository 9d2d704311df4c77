"""Files the worker reads at start-up, read here and handed to the pure core as data.

``processors/core`` does no I/O: a ``Pricer`` takes a price table (``Rate`` per key), a ``TextGuard`` takes an
``InjectionClassifier`` built from arrays. This module owns the file formats on disk: the YAML price overrides
(``processors/data/prices_override.yaml`` is the example) and the injection model's ``.npz`` file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmpulse.processors.core.guards.classifier import InjectionClassifier
from llmpulse.processors.core.pricing import Rate, parse_overrides

DATA_DIR = Path(__file__).resolve().parent / "data"
INJECTION_MODEL = DATA_DIR / "injection_model.npz"  # written by training/train_injection.py
EXAMPLE_PRICES = DATA_DIR / "prices_override.yaml"


def read_price_overrides(path: str | Path | None) -> dict[str, Rate]:
    """The price table in a YAML file: ``models: {name: {input: $/M, output: $/M, cached: $/M, provider: opt}}``.

    None (no file configured) is an empty table. Validation and units are ``pricing.parse_overrides``'.
    """
    if path is None:
        return {}
    import yaml  # processor extra; only needed when an override file is configured

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return parse_overrides(raw.get("models", raw))


def read_injection_model(path: str | Path = INJECTION_MODEL) -> InjectionClassifier:
    """The injection classifier stored in ``path`` (default: the model shipped in ``processors/data``)."""
    with np.load(path) as data:
        return InjectionClassifier.from_arrays({name: data[name] for name in data.files})


def write_injection_model(model: InjectionClassifier, path: str | Path) -> None:
    np.savez_compressed(path, **model.to_arrays())
