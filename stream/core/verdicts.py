"""The verdict a decision becomes: built in one place, so the live scorer and the batch
back-fill publish the same fields (challengers' scores and contributions included)."""

from __future__ import annotations

from stream.contracts.codec import format_time, verdict_json
from stream.contracts.messages import Transaction, Verdict
from stream.core.pipeline import Scored


def to_verdict(tx: Transaction, scored: Scored, model_version: str, now_s: float,
               latency_ms: float) -> Verdict:
    """The published verdict; optional parts are None (left out of the JSON) when empty.

    >>> from stream.core.pipeline import Scored
    >>> tx = Transaction("t1", "c1", "m1", 12.5, 1_767_225_600.0)
    >>> v = to_verdict(tx, Scored(0.7, "decline", {"amount_log": 1.2}, 0), "lr@1", 1.7e9, 3.0)
    >>> v.decision, v.contributions, v.challengers, v.scored_at, v.model_state
    ('decline', {'amount_log': 1.2}, None, '2023-11-14T22:13:20.000Z', 'ready')
    >>> warming = Scored(0.5, "approve", {}, 0, model_state="warming")
    >>> to_verdict(tx, warming, "lr@1", 1.7e9, 3.0).model_state
    'warming'
    """
    return Verdict(
        transaction_id=tx.transaction_id,
        card_id=tx.card_id,
        score=scored.score,
        decision=scored.decision,
        model_version=model_version,
        scored_at=format_time(now_s),
        latency_ms=round(latency_ms, 3),
        contributions=scored.contributions or None,
        challengers=dict(scored.challengers) if scored.challengers else None,
        model_state=scored.model_state,
    )


def verdict_bytes(tx: Transaction, scored: Scored, model_version: str, now_s: float,
                  latency_ms: float) -> bytes:
    """`encode_verdict(to_verdict(...))` without the `Verdict` in between: the live scorer
    publishes one per event, and a frozen dataclass sets each of its ten fields through
    `object.__setattr__`, about 4.5 us of the 8.5 that building and encoding took
    (docs/benchmark.md "Sends by position, verdicts without the dataclass").

    >>> from stream.contracts.codec import encode_verdict
    >>> tx = Transaction("t1", "c1", "m1", 12.5, 1_767_225_600.0)
    >>> scored = Scored(0.7, "decline", {"amount_log": 1.2}, 0, challengers={"b": 0.4})
    >>> verdict_bytes(tx, scored, "lr@1", 1.7e9, 3.14159) == encode_verdict(
    ...     to_verdict(tx, scored, "lr@1", 1.7e9, 3.14159))
    True
    """
    return verdict_json(
        tx.transaction_id, tx.card_id, scored.score, scored.decision, model_version,
        format_time(now_s), round(latency_ms, 3), scored.model_state,
        scored.contributions or None,
        dict(scored.challengers) if scored.challengers else None)
