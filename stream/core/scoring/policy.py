"""The verdict policy: where the score stops being approved."""

from __future__ import annotations

from dataclasses import dataclass

from stream.contracts.messages import Decision


@dataclass(frozen=True, slots=True)
class Policy:
    """Two thresholds split the score range into approve / review / decline.

    Both bounds are inclusive on the upper side, so a threshold of 0.6 declines a score of
    exactly 0.6; `review == decline` disables the review band.

    >>> Policy(review_threshold=0.2, decline_threshold=0.6).decide(0.3)
    'review'
    """

    review_threshold: float = 0.2
    decline_threshold: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_threshold <= self.decline_threshold <= 1.0:
            raise ValueError("need 0 <= review_threshold <= decline_threshold <= 1")

    def decide(self, score: float) -> Decision:
        if score >= self.decline_threshold:
            return "decline"
        if score >= self.review_threshold:
            return "review"
        return "approve"
