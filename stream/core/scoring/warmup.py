"""The cold start: how a partition decides before its model has learned enough to be trusted.

A model that has learned nothing scores every transaction 0.5, which the score policy sends to
`review`: a fresh scorer would flood the analysts' queue on its first day. So until a
partition's model has learned from `labels` labels, its decisions follow a fallback policy
that does not look at the score: approve, except (when configured) review at or above one
amount and decline at or above another. The score is still computed and published, and the
model keeps learning; only the decision changes.

A partition's learned-label count travels with its state (snapshots, the changelog, a trained
`--init-from` snapshot), so a restarted scorer or one started from a trained model that had
already learned enough is ready at once. `labels=0` turns the warm-up off.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.contracts.messages import Decision, ModelState
from stream.core.scoring.policy import Policy


@dataclass(frozen=True, slots=True)
class Warmup:
    """The warm-up length and the fallback rules used during it.

    >>> warmup = Warmup(labels=500, review_amount=1000.0, decline_amount=5000.0)
    >>> warmup.state(learned=499), warmup.state(learned=500)
    ('warming', 'ready')
    >>> [warmup.fallback(amount) for amount in (25.0, 1000.0, 7500.0)]
    ['approve', 'review', 'decline']
    >>> Warmup(labels=500).fallback(1e9)  # no rules: approve everything while warming
    'approve'
    >>> warmup.decide(Policy(0.2, 0.6), score=0.5, amount=25.0, learned=0)
    ('approve', 'warming')
    >>> warmup.decide(Policy(0.2, 0.6), score=0.5, amount=25.0, learned=500)
    ('review', 'ready')
    """

    # Labels a partition's model must have learned before its score decides.
    labels: int = 500
    # Fallback rules while warming (amounts in the transaction's currency; None: rule off).
    review_amount: float | None = None
    decline_amount: float | None = None

    def __post_init__(self) -> None:
        if self.labels < 0:
            raise ValueError("warmup_labels must be >= 0")
        for name in ("review_amount", "decline_amount"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # also refuses NaN
                raise ValueError(f"warmup_{name} must be >= 0")
        review, decline = self.review_amount, self.decline_amount
        if review is not None and decline is not None and review > decline:
            raise ValueError("warmup_review_amount must not exceed warmup_decline_amount")

    def state(self, learned: int) -> ModelState:
        """`ready` once the partition's model has learned from `labels` labels."""
        return "ready" if learned >= self.labels else "warming"

    def fallback(self, amount: float) -> Decision:
        """The decision while warming: by amount only (both bounds inclusive), else approve."""
        if self.decline_amount is not None and amount >= self.decline_amount:
            return "decline"
        if self.review_amount is not None and amount >= self.review_amount:
            return "review"
        return "approve"

    def decide(self, policy: Policy, score: float, amount: float, learned: int
               ) -> tuple[Decision, ModelState]:
        """The decision and the model state it was made in: the score policy once the model is
        ready, the fallback rules before."""
        if learned >= self.labels:
            return policy.decide(score), "ready"
        return self.fallback(amount), "warming"
