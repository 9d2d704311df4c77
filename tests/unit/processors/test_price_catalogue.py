"""A worker loads the price catalogue while it starts, not in the first group of records it processes: that group,
and the alerts it decides, would otherwise wait ~0.2 s for it."""

from __future__ import annotations

from pathlib import Path

from genai_prices import data_snapshot

from llmpulse.processors.app import Worker
from llmpulse.processors.core.pricing import Pricer
from llmpulse.processors.settings import ProcessorSettings


def _catalogues_loaded() -> int:
    return data_snapshot._bundled_snapshot.cache_info().currsize  # genai-prices keeps the one it loaded


def test_building_a_worker_loads_the_price_catalogue(tmp_path: Path) -> None:
    data_snapshot._bundled_snapshot.cache_clear()
    Worker(ProcessorSettings(bootstrap_servers="127.0.0.1:1", data_dir=tmp_path))  # nothing connects yet
    assert _catalogues_loaded() == 1


def test_a_pricer_told_not_to_use_the_catalogue_does_not_load_it() -> None:
    data_snapshot._bundled_snapshot.cache_clear()
    Pricer(use_catalogue=False).load_catalogue()
    assert _catalogues_loaded() == 0
    Pricer().load_catalogue()
    assert _catalogues_loaded() == 1
