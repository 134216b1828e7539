"""Short fraud: card-testing bursts, stolen-card sprees, and single transaction-level frauds.

Incidents start at random (Poisson, per 10,000 cards per day) on cards picked uniformly: card
numbers are stolen in bulk, regardless of how much their owners use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from numpy.random import Generator

from stream.devtools.traffic.legit import Batch
from stream.devtools.traffic.scenarios import Runner, validate
from stream.devtools.traffic.world import DAY, ECOM, HOUR, Population


class _Burst(Protocol):
    @property
    def per_day(self) -> float: ...

    def incident(self, pop: Population, rng: Generator, t0: float) -> Batch: ...


class _Bursts:
    """Runs a short scenario: each day a Poisson number of incidents, each starting that day."""

    def __init__(self, scenario: _Burst, pop: Population, rng: Generator, intensity: float
                 ) -> None:
        self.scenario, self.pop, self.rng = scenario, pop, rng
        self.mean = scenario.per_day * pop.n_cards / 10_000 * intensity

    def day(self, t0: float) -> list[Batch]:
        n = int(self.rng.poisson(self.mean)) if self.mean > 0 else 0
        return [self.scenario.incident(self.pop, self.rng, t0) for _ in range(n)]


def _night(t: float, u: float) -> float:
    """A random moment between 00:00 and 05:00 at or after `t` (fraudsters like the night)."""
    if t // HOUR % 24 < 5:
        return t
    return (math.floor(t / DAY) + 1) * DAY + u * 5 * HOUR


def _new_merchant(pop: Population, rng: Generator, card: int, pool: np.ndarray) -> int:
    """A merchant from `pool` that is not one of the card's favourites (if there is one)."""
    for _ in range(10):
        merchant = int(pool[rng.integers(len(pool))])
        if not pop.is_favourite(card, merchant):
            return merchant
    return int(rng.integers(pop.n_merchants))


@dataclass(frozen=True)
class CardTesting:
    """Card testing: a fraudster checks that a stolen card number works before cashing out.

    A burst of tiny online amounts on one card within minutes, mostly at digital-goods or
    charity merchants (where small payments look normal); some testers rotate merchants.

    Parameters:
        per_day: bursts per day per 10,000 cards.
        size_min, size_max: transactions per burst (uniform integer).
        amount_min, amount_max: each amount (uniform).
        gap_s: mean seconds between attempts (2 s plus an exponential with this mean).
        p_testing_merchant: chance a merchant is a digital-goods or charity one (else any
            online merchant).
        p_rotate: chance each attempt after the first moves to another merchant.
    """

    name: ClassVar[str] = "card_testing"
    per_day: float = 1.5
    size_min: int = 5
    size_max: int = 20
    amount_min: float = 0.5
    amount_max: float = 5.0
    gap_s: float = 35.0
    p_testing_merchant: float = 0.7
    p_rotate: float = 0.25

    def __post_init__(self) -> None:
        validate(self)

    def expected_per_day(self, pop: Population) -> float:
        return self.per_day * pop.n_cards / 10_000 * (self.size_min + self.size_max) / 2

    def runner(self, pop: Population, rng: Generator, intensity: float, start: float) -> Runner:
        return _Bursts(self, pop, rng, intensity)

    def incident(self, pop: Population, rng: Generator, t0: float) -> Batch:
        card = int(rng.integers(pop.n_cards))
        size = int(rng.integers(self.size_min, self.size_max + 1))
        gaps = 2.0 + rng.exponential(self.gap_s, size)
        gaps[0] = rng.random() * DAY
        testing = pop.testing[rng.integers(len(pop.testing), size=size)]
        online = pop.online_merchants[rng.integers(len(pop.online_merchants), size=size)]
        pool = np.where(rng.random(size) < self.p_testing_merchant, testing, online)
        rotate = rng.random(size) < self.p_rotate
        rotate[0] = True
        merchant = pool[np.maximum.accumulate(np.where(rotate, np.arange(size), 0))]
        amount = rng.uniform(self.amount_min, self.amount_max, size)
        return Batch.of(t0 + np.cumsum(gaps), card, merchant, amount, ECOM)


@dataclass(frozen=True)
class StolenCard:
    """A stolen card: the thief spends fast, where the owner never shops, before it is blocked.

    A few transactions within hours at high-value merchants that are not the card's favourites,
    usually several times the card's typical amount, often at night, sometimes abroad (then
    mostly in a "risky" country). Some thieves are quiet and keep to ordinary amounts. The owner
    keeps using the card meanwhile (they have not noticed yet).

    Parameters:
        per_day: sprees per day per 10,000 cards.
        size_min, size_max: transactions per spree (uniform integer).
        amount_min, amount_max: amounts are this many times (uniform) the card's typical amount.
        p_quiet: chance a spree keeps to the card's ordinary amounts instead.
        p_night: chance a spree waits for the night (00:00-05:00).
        p_abroad: chance a spree happens abroad (60% of those in a risky country).
        gap_s: mean seconds between purchases (60 s plus an exponential with this mean).
    """

    name: ClassVar[str] = "stolen_card"
    per_day: float = 5.0
    size_min: int = 2
    size_max: int = 6
    amount_min: float = 3.0
    amount_max: float = 12.0
    p_quiet: float = 0.2
    p_night: float = 0.6
    p_abroad: float = 0.35
    gap_s: float = 1500.0

    def __post_init__(self) -> None:
        validate(self)

    def expected_per_day(self, pop: Population) -> float:
        return self.per_day * pop.n_cards / 10_000 * (self.size_min + self.size_max) / 2

    def runner(self, pop: Population, rng: Generator, intensity: float, start: float) -> Runner:
        return _Bursts(self, pop, rng, intensity)

    def incident(self, pop: Population, rng: Generator, t0: float) -> Batch:
        card = int(rng.integers(pop.n_cards))
        size = int(rng.integers(self.size_min, self.size_max + 1))
        t = t0 + rng.random() * DAY
        if rng.random() < self.p_night:
            t = _night(t, rng.random())
        gaps = 60.0 + rng.exponential(self.gap_s, size)
        gaps[0] = 0.0
        merchant = np.array([_new_merchant(pop, rng, card, pop.high_value) for _ in range(size)])
        country = -1
        if rng.random() < self.p_abroad:
            country = int(pop.foreign_countries(rng, np.array([card]), 0.6)[0])
        typical = pop.typical[card]
        if rng.random() < self.p_quiet:
            amount = typical * np.exp(pop.sigma[card] * rng.standard_normal(size))
        else:
            amount = typical * rng.uniform(self.amount_min, self.amount_max, size)
        return Batch.of(t + np.cumsum(gaps), card, merchant, amount, country=country)


@dataclass(frozen=True)
class TransactionOnly:
    """Fraud that the transaction alone gives away: one very large online purchase.

    A single purchase of a large amount at a high-value online merchant the card has not used,
    mostly at night. Legitimate purchases of that size exist (big purchases at airlines,
    jewellers, electronics) but are rare. Meant to be a small share of the fraud.

    Parameters:
        per_day: frauds per day per 10,000 cards.
        amount_min, amount_max: the amount (uniform).
        p_night: chance it happens at night (00:00-05:00).
    """

    name: ClassVar[str] = "transaction_only"
    per_day: float = 5.0
    amount_min: float = 1500.0
    amount_max: float = 5000.0
    p_night: float = 0.8

    def __post_init__(self) -> None:
        validate(self)

    def expected_per_day(self, pop: Population) -> float:
        return self.per_day * pop.n_cards / 10_000

    def runner(self, pop: Population, rng: Generator, intensity: float, start: float) -> Runner:
        return _Bursts(self, pop, rng, intensity)

    def incident(self, pop: Population, rng: Generator, t0: float) -> Batch:
        card = int(rng.integers(pop.n_cards))
        t = t0 + rng.random() * DAY
        if rng.random() < self.p_night:
            t = _night(t, rng.random())
        merchant = _new_merchant(pop, rng, card, pop.online_high_value)
        amount = np.array([rng.uniform(self.amount_min, self.amount_max)])
        return Batch.of(np.array([t]), card, merchant, amount, ECOM)
