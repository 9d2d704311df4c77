"""assign_variant is deterministic and follows its splits; feedback is validated, encoded and decoded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llmpulse.processors.wire.feedback import FeedbackDecoder
from llmpulse.producers.assignment import assign_variant
from llmpulse.producers.feedback import FeedbackEncoder, feedback_row


def test_assignment_is_deterministic_and_follows_the_splits() -> None:
    assert assign_variant("exp", "user-1") == assign_variant("exp", "user-1")
    counts = Counter(assign_variant("exp", f"u{i}", {"control": 0.9, "treatment": 0.1}) for i in range(20_000))
    assert counts["treatment"] / 20_000 == pytest.approx(0.1, abs=0.01)
    thirds = Counter(assign_variant("exp", f"u{i}", ["a", "b", "c"]) for i in range(9_000))
    assert all(abs(v - 3000) < 200 for v in thirds.values())
    with pytest.raises(ValueError):
        assign_variant("exp", "u", {"a": -1.0})


def test_feedback_rows_reject_ambiguous_or_out_of_range_values() -> None:
    assert feedback_row("r1", thumbs=True, rating=4) is None
    assert feedback_row("r1", rating=6) is None
    assert feedback_row("", score=0.5) is None
    assert feedback_row("r1", score=float("nan")) is None


def test_feedback_round_trips_the_wire_as_columns() -> None:
    rows = [feedback_row("r1", thumbs=True), feedback_row("r2", rating=4, source="user"),
            feedback_row("r3", score=0.25, source="judge"), feedback_row("r4", correct=False, source="review")]
    feedback, refused = FeedbackDecoder().decode(FeedbackEncoder("t").encode("svc", rows))  # type: ignore[arg-type]
    assert not refused and feedback is not None
    score, binary = feedback.scores()
    assert np.allclose(score, [1.0, 0.75, 0.25, 0.0]) and binary.tolist() == [True, False, False, True]
    assert feedback.source.tolist() == ["user", "user", "judge", "review"]
