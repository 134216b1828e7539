from __future__ import annotations

import pytest

from stream.core.scoring.policy import Policy


@pytest.mark.parametrize(
    ("score", "decision"),
    [(0.0, "approve"), (0.199, "approve"), (0.2, "review"), (0.59, "review"), (0.6, "decline"),
     (1.0, "decline")],
)
def test_thresholds_split_the_score_range(score: float, decision: str) -> None:
    assert Policy(0.2, 0.6).decide(score) == decision


def test_equal_thresholds_disable_review() -> None:
    policy = Policy(0.5, 0.5)
    assert {policy.decide(s) for s in (0.1, 0.49, 0.5, 0.9)} == {"approve", "decline"}


@pytest.mark.parametrize(("review", "decline"), [(0.7, 0.6), (-0.1, 0.5), (0.1, 1.5)])
def test_inconsistent_thresholds_are_refused(review: float, decline: float) -> None:
    with pytest.raises(ValueError):
        Policy(review, decline)
