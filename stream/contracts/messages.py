"""The messages that cross the system boundary, as plain immutable values.

Every layer after the data layer works on these types only, never on raw bytes or
Kafka records, so the core stays pure and testable without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["approve", "review", "decline"]
# "warming": the partition's model had not learned enough labels yet, so the decision followed
# the cold-start fallback rules rather than the score (stream/core/scoring/warmup.py).
ModelState = Literal["warming", "ready"]


@dataclass(frozen=True, slots=True)
class Transaction:
    """A validated transaction event.

    `timestamp` is event time in epoch seconds (UTC); all windows use it, never the
    wall clock, so a replay of history computes the same features as live traffic.
    `is_fraud` is None when the event carries no label.
    """

    transaction_id: str
    card_id: str
    merchant_id: str
    amount: float
    timestamp: float
    is_fraud: bool | None = None
    currency: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Label:
    """A confirmed outcome for an earlier transaction (chargeback, analyst review)."""

    transaction_id: str
    card_id: str
    is_fraud: bool
    timestamp: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision published for one transaction; field names follow the contract.

    `model_state` is "warming" while the decision follows the cold-start fallback rules
    instead of the score (the score is still the model's), "ready" after.
    """

    transaction_id: str
    card_id: str
    score: float
    decision: Decision
    model_version: str
    scored_at: str
    latency_ms: float
    contributions: dict[str, float] | None = None
    challengers: dict[str, float] | None = None
    model_state: ModelState = "ready"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record came from, so a dead letter can be traced and replayed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be processed, with a short reason code and the original bytes."""

    reason: str
    error: str
    source: SourceRef
    payload: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
