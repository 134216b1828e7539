"""`TrafficConfig`: what to generate. The same config always yields the same stream."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stream.devtools.traffic.labels import LabelModel
from stream.devtools.traffic.registry import DEFAULT_SCENARIOS
from stream.devtools.traffic.scenarios import Scenario

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TrafficConfig:
    """What to generate; the same config always yields the same events.

    The length is set by exactly one of `count` (the exact number of transactions) and `days`
    (this much event time from `start`; pass `count=None`, or use `TrafficConfig.for_days`).

    `fraud_rate` is the expected share of fraudulent transactions: the scenarios' rates are all
    multiplied by one factor, computed from their expected fraud per day on this population, so
    their proportions are kept. `None` uses the scenarios' own rates; 0 means no fraud. The
    realised share varies around the target because fraud comes in incidents (a breach is one
    large lump), the more so the shorter the stream and the fewer the merchants.

    `labels` is only used by `generate_stream` (labels as separate, delayed records).

    >>> TrafficConfig(1000).count, TrafficConfig.for_days(42, n_cards=100).days
    (1000, 42)
    """

    count: int | None
    fraud_rate: float | None = 0.01
    seed: int = 7
    n_cards: int = 2000
    n_merchants: int = 400
    start: datetime | None = None
    mean_tx_per_card_per_day: float = 3.0
    scenarios: tuple[Scenario, ...] = DEFAULT_SCENARIOS
    labels: LabelModel = LabelModel()  # frozen, so one shared default is safe
    days: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.days is None):
            raise ValueError("give exactly one of count and days")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.days is not None and not (math.isfinite(self.days) and self.days >= 0):
            raise ValueError(f"days must be a finite number >= 0, got {self.days}")
        if self.fraud_rate is not None and not 0.0 <= self.fraud_rate < 1.0:
            raise ValueError(f"fraud_rate must be in [0, 1) or None, got {self.fraud_rate}")
        if self.n_cards < 1 or self.n_merchants < 1:
            raise ValueError("n_cards and n_merchants must be >= 1")
        if not self.mean_tx_per_card_per_day > 0:
            raise ValueError("mean_tx_per_card_per_day must be > 0")
        if not isinstance(self.scenarios, tuple) or not all(
                hasattr(s, "expected_per_day") for s in self.scenarios):
            raise ValueError("scenarios must be a tuple of scenarios (see parse_scenarios)")
        if self.fraud_rate and not self.scenarios:
            raise ValueError("a fraud_rate > 0 needs at least one scenario")

    @classmethod
    def for_days(cls, days: float, **kwargs: Any) -> TrafficConfig:
        """A config whose length is `days` of event time rather than a count."""
        return cls(None, days=days, **kwargs)

    @property
    def start_time(self) -> datetime:
        """`start` (a naive start means UTC), or 2026-01-01T00:00Z."""
        start = self.start or DEFAULT_START
        return start if start.tzinfo is not None else start.replace(tzinfo=UTC)
