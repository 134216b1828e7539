"""When a transaction's outcome becomes known, in event time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.random import Generator

_DAY = 86400.0


@dataclass(frozen=True)
class LabelModel:
    """Label delays, in days after the transaction.

    Fraud is confirmed when the cardholder disputes it (a chargeback): the delay is lognormal
    with median `fraud_median_days` and log-scale spread `fraud_sigma`, clipped to
    [`fraud_min_days`, `fraud_max_days`]. A legitimate transaction is confirmed once the
    no-chargeback period `legit_days` has passed, plus a uniform jitter of up to
    `legit_jitter_days` (batch jobs, time zones).

    >>> model = LabelModel()
    >>> delays = model.delays_s(np.random.default_rng(1), np.array([True, False]))
    >>> bool(1 <= delays[0] / 86400 <= 45 and 7 <= delays[1] / 86400 <= 8)
    True
    >>> LabelModel.constant(3600.0).delays_s(np.random.default_rng(1), np.array([True, False]))
    array([3600., 3600.])
    """

    fraud_median_days: float = 7.0
    fraud_sigma: float = 0.5
    fraud_min_days: float = 1.0
    fraud_max_days: float = 45.0
    legit_days: float = 7.0
    legit_jitter_days: float = 1.0

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"LabelModel.{key} must be a finite number >= 0, got {value}")
        if self.fraud_median_days <= 0:
            raise ValueError("LabelModel.fraud_median_days must be > 0")
        if self.fraud_min_days > self.fraud_max_days:
            raise ValueError("LabelModel.fraud_min_days must be <= fraud_max_days")

    @classmethod
    def constant(cls, delay_s: float) -> LabelModel:
        """Every label exactly `delay_s` seconds after its transaction."""
        days = delay_s / _DAY
        if days == 0:  # a lognormal needs a positive median; clipping makes it exactly 0
            return cls(1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(days, 0.0, days, days, days, 0.0)

    def delays_s(self, rng: Generator, is_fraud: np.ndarray) -> np.ndarray:
        """One delay in seconds per transaction (the same number of draws whatever the labels)."""
        n = len(is_fraud)
        fraud = np.clip(rng.lognormal(math.log(self.fraud_median_days), self.fraud_sigma, n),
                        self.fraud_min_days, self.fraud_max_days)
        legit = self.legit_days + self.legit_jitter_days * rng.random(n)
        return np.where(is_fraud, fraud, legit) * _DAY
