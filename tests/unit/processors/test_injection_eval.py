"""Held-out accuracy of the shipped injection detector: a regression in patterns, features or weights fails.

Uses ../shared/data/injection/*.jsonl (see SOURCES.md there); fails, naming the folder, without it. The split is
recomputed exactly as the training script makes it, and only the held-out part is scored. Floors are the
figures measured when the model was trained, minus a margin:

=====================  =========  ======  (measured)
slice                  precision  recall
=====================  =========  ======
overall                0.99       0.95
length-matched         0.976      0.91
=====================  =========  ======
"""

from __future__ import annotations

import numpy as np
import pytest

from llmpulse.processors.core.guards.injection import InjectionDetector
from llmpulse.processors.loaders import read_injection_model
from llmpulse.processors.training.train_injection import (
    Dataset,
    length_buckets,
    length_matched,
    load_dataset,
    long_benign,
    scores,
)
from tests.support.shared_data import shared_data


@pytest.fixture(scope="module")
def held_out() -> tuple[list[str], np.ndarray]:
    for name in ("attacks.jsonl", "benign.jsonl"):  # the two halves the model was trained on
        shared_data("injection", name)
    data: Dataset = load_dataset(shared_data("injection"))
    test = np.flatnonzero(data.is_test)
    return [data.texts[i] for i in test], data.labels[test]


@pytest.fixture(scope="module")
def predicted(held_out: tuple[list[str], np.ndarray]) -> np.ndarray:
    detector = InjectionDetector(read_injection_model())
    return detector.score(held_out[0]).score >= 0.5


def test_split_is_large_enough_to_mean_something(held_out: tuple[list[str], np.ndarray]) -> None:
    texts, labels = held_out
    assert len(texts) > 300 and labels.sum() > 150 and (~labels).sum() > 100


def test_overall_precision_and_recall(held_out: tuple[list[str], np.ndarray], predicted: np.ndarray) -> None:
    s = scores(predicted, held_out[1])
    assert s.precision >= 0.95
    assert s.recall >= 0.90


def test_length_matched_subsample(held_out: tuple[list[str], np.ndarray], predicted: np.ndarray) -> None:
    texts, labels = held_out
    idx = length_matched(texts, labels)
    assert labels[idx].sum() == (~labels[idx]).sum() > 50
    s = scores(predicted[idx], labels[idx])
    assert s.precision >= 0.93
    assert s.recall >= 0.85


def test_short_texts_are_not_waved_through(
    held_out: tuple[list[str], np.ndarray], predicted: np.ndarray
) -> None:
    # The shortcut "short = benign" is what this data invites; the shortest bucket must keep real recall.
    texts, labels = held_out
    short = length_buckets(texts) == 0
    s = scores(predicted[short], labels[short])
    assert s.precision >= 0.90
    assert s.recall >= 0.75


def test_long_benign_texts_are_not_flagged(held_out: tuple[list[str], np.ndarray]) -> None:
    # The other half of the length shortcut: held-out benign texts glued into attack-sized documents.
    texts, labels = held_out
    benign = [t for t, is_attack in zip(texts, labels, strict=True) if not is_attack]
    long_texts = long_benign(benign, np.repeat([600, 1000, 2000, 4000], 50), seed=1)
    flagged = InjectionDetector(read_injection_model()).score(long_texts).score >= 0.5
    assert flagged.mean() <= 0.05
