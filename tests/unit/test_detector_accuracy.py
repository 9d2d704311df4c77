"""The detectors meet the issue's accuracy goals on data they were not trained on (issue 15, item 6).

Injection: the shared data's held-out split (``train_injection.load_dataset``), goals recall >= 95% at a
false-positive rate <= 1%, and recall >= 90% on texts under 400 characters. PII: ``bench.pii_samples``
(generated positives, near-misses, held-out benign prompts), goals precision >= 99% and recall >= 95% for
email, phone, SSN and card. A goal the figures miss fails here, naming the figure.
"""

from __future__ import annotations

import pytest

from bench import detector_accuracy
from bench.common import GroupResult
from tests.support.shared_data import shared_data


@pytest.fixture(scope="module")
def figures() -> dict[str, float | None]:
    shared_data("injection", "attacks.jsonl")
    result = GroupResult()
    detector_accuracy.injection_figures(result)
    detector_accuracy.pii_figures(result)
    return result.figures


# Reached by the naive-Bayes-scaled model (shipped model, held-out split): recall 0.954 (228 of 239 attacks), recall
# under 400 chars 0.923 (84 of 91), FPR 0.0059 (1 of 170 benign). One benign text more flagged would miss the FPR
# goal: the split is small, see train_injection's cross-validated figures for the steadier estimate.


@pytest.mark.parametrize(("key", "goal"), [
    ("injection_recall", 0.95), ("injection_recall_lt400", 0.90),
    ("pii_recall_email", 0.95), ("pii_recall_phone", 0.95), ("pii_recall_ssn", 0.95),
    ("pii_recall_credit_card", 0.95), ("pii_precision_email", 0.99), ("pii_precision_phone", 0.99),
    ("pii_precision_ssn", 0.99), ("pii_precision_credit_card", 0.99),
])
def test_held_out_figure_reaches_its_goal(figures: dict[str, float | None], key: str, goal: float) -> None:
    value = figures[key]
    assert value is not None and value >= goal, f"{key} = {value} < {goal}"


def test_injection_false_positive_rate_is_within_one_percent(figures: dict[str, float | None]) -> None:
    value = figures["injection_fpr"]
    assert value is not None and value <= 0.01, f"injection_fpr = {value} > 0.01"
