"""Fraud that lasts: breached merchants (weeks) and compromised cards (days).

A scenario is a frozen dataclass of documented parameters. It knows how much fraud it makes per
simulated day on average (`expected_per_day`, analytic, used to scale the mix to `fraud_rate`)
and makes a runner that injects its fraudulent transactions one day at a time. Incidents that
last are started in steady state: the ones that would already be under way at the start of the
stream are simulated as having begun before it.

Rates are per population size, so a mix keeps its proportions when the population grows:
breaches per 1,000 merchants, card incidents per 10,000 cards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.random import Generator

from stream.devtools.traffic.legit import Batch
from stream.devtools.traffic.world import DAY, Population, sample_times, slice_weights


class Runner(Protocol):
    def day(self, t0: float) -> list[Batch]:
        """The scenario's fraud starting in [t0, t0 + 1 day) (bursts may run past its end)."""
        ...


class Scenario(Protocol):
    name: ClassVar[str]

    def expected_per_day(self, pop: Population) -> float: ...

    def runner(self, pop: Population, rng: Generator, intensity: float, start: float) -> Runner:
        ...


def validate(scenario: Any) -> None:
    """Rates and amounts >= 0, `*_min` <= `*_max`, `p_*` in [0, 1], `share_*` in [0, 1)."""
    values = {f.name: getattr(scenario, f.name) for f in fields(scenario)}
    for key, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{scenario.name}: {key} must be a finite number >= 0, got {value!r}")
        if key.startswith("p_") and value > 1:
            raise ValueError(f"{scenario.name}: {key} must be in [0, 1], got {value}")
        if key.startswith("share_") and value >= 1:
            raise ValueError(f"{scenario.name}: {key} must be in [0, 1), got {value}")
        if key.startswith("size_") and value < 1:
            raise ValueError(f"{scenario.name}: {key} must be >= 1, got {value}")
        if key.endswith("_min") and value > values[key[:-4] + "_max"]:
            raise ValueError(f"{scenario.name}: {key} must be <= {key[:-4]}_max")


def mean_odds(low: float, high: float) -> float:
    """E[s / (1 - s)] for s uniform in [low, high]: fraud injected per legit transaction."""
    if high - low < 1e-12:
        return low / (1 - low)
    return ((-high - math.log1p(-high)) - (-low - math.log1p(-low))) / (high - low)


@dataclass(frozen=True)
class BreachedMerchant:
    """A breached merchant: for weeks, fraud from many unrelated cards at one merchant.

    New merchants are breached at random (Poisson), each picked in proportion to its traffic and
    never one breached before. While the breach lasts, extra fraudulent transactions arrive from
    random cards, following the merchant's daily cycle, at a rate that makes `share` of the
    merchant's traffic fraud; the amounts are what each card ordinarily spends at such a merchant,
    somewhat inflated. Then the merchant is clean again. The only strong signal is the merchant's
    recent fraud rate (from labels, which arrive late); the amounts are a weak hint.

    Parameters:
        per_day: new breaches per day per 1,000 merchants.
        days_min, days_max: how long a breach lasts, in days (uniform).
        share_min, share_max: the share of the merchant's traffic that is fraud (uniform).
        inflate_max: amounts are multiplied by a uniform factor in [1, inflate_max].
    """

    name: ClassVar[str] = "breached_merchant"
    per_day: float = 0.2
    days_min: float = 7.0
    days_max: float = 28.0
    share_min: float = 0.1
    share_max: float = 0.3
    inflate_max: float = 1.5

    def __post_init__(self) -> None:
        validate(self)
        if self.inflate_max < 1:
            raise ValueError(f"{self.name}: inflate_max must be >= 1")

    def expected_per_day(self, pop: Population) -> float:
        # A merchant picked by traffic share s has s * total legit traffic per day.
        busy = float(np.sum(pop.merchant_share ** 2)) * pop.total_rate
        breaches = self.per_day * pop.n_merchants / 1000
        days = (self.days_min + self.days_max) / 2
        return breaches * days * mean_odds(self.share_min, self.share_max) * busy

    def runner(self, pop: Population, rng: Generator, intensity: float, start: float) -> Runner:
        return _Breaches(self, pop, rng, intensity, start)


class _Breaches:
    def __init__(self, s: BreachedMerchant, pop: Population, rng: Generator, intensity: float,
                 start: float) -> None:
        self.s, self.pop, self.rng = s, pop, rng
        self.per_day = s.per_day * pop.n_merchants / 1000 * intensity
        self.active: list[tuple[int, float, float, float]] = []  # merchant, begin, end, odds
        self.breached: set[int] = set()
        self._open(start - s.days_max * DAY, start)

    def _open(self, begin: float, end: float) -> None:
        s, rng = self.s, self.rng
        n = int(rng.poisson(self.per_day * (end - begin) / DAY)) if self.per_day > 0 else 0
        for when in np.sort(begin + rng.random(n) * (end - begin)):
            merchant = self._new_merchant()
            if merchant is None:
                return
            self.breached.add(merchant)
            days = rng.uniform(s.days_min, s.days_max)
            share = rng.uniform(s.share_min, s.share_max)
            self.active.append((merchant, float(when), when + days * DAY, share / (1 - share)))

    def _new_merchant(self) -> int | None:
        for _ in range(50):
            merchant = self.pop.busy_merchant(self.rng)
            if merchant not in self.breached:
                return merchant
        return None

    def day(self, t0: float) -> list[Batch]:
        pop, rng, t1 = self.pop, self.rng, t0 + DAY
        self._open(t0, t1)
        weights = pop.day_weights(t0)
        out = []
        for merchant, begin, end, odds in self.active:
            expected = odds * pop.merchant_share[merchant] * pop.total_rate * weights.sum()
            t = sample_times(rng, int(rng.poisson(expected)), t0, weights)
            t = t[(t >= begin) & (t < end)]
            cards = rng.integers(0, pop.n_cards, len(t))
            amount = pop.legit_amounts(rng, cards, np.full(len(t), merchant))
            amount *= rng.uniform(1.0, self.s.inflate_max, len(t))
            out.append(Batch.of(t, cards, merchant, amount))
        self.active = [a for a in self.active if a[2] > t1]
        return out


@dataclass(frozen=True)
class CompromisedCard:
    """A compromised card used quietly alongside its owner, for days.

    Someone with the card's details (a household member, a skimmed copy used locally) spends at
    the merchants the card already uses, by the card's own favourite weights and at its own
    hours, at several times its usual amount there. The cardholder keeps transacting normally,
    so about `share` of the card's transactions in the window are fraud. Cards are picked in
    proportion to their activity (busy cards are exposed more).

    Parameters:
        per_day: new incidents per day per 10,000 cards.
        days_min, days_max: how long the card is abused, in days (uniform).
        share_min, share_max: the share of the card's transactions that is fraud (uniform).
        amount_min, amount_max: fraud amounts are this many times (uniform) what the card
            ordinarily spends at the merchant.
    """

    name: ClassVar[str] = "compromised_card"
    per_day: float = 4.5
    days_min: float = 2.0
    days_max: float = 10.0
    share_min: float = 0.25
    share_max: float = 0.4
    amount_min: float = 3.0
    amount_max: float = 6.0

    def __post_init__(self) -> None:
        validate(self)

    def expected_per_day(self, pop: Population) -> float:
        rate = float(np.sum(pop.rate ** 2) / pop.total_rate) if pop.total_rate > 0 else 0.0
        incidents = self.per_day * pop.n_cards / 10_000
        days = (self.days_min + self.days_max) / 2
        return incidents * days * mean_odds(self.share_min, self.share_max) * rate

    def runner(self, pop: Population, rng: Generator, intensity: float, start: float) -> Runner:
        return _Compromises(self, pop, rng, intensity, start)


class _Compromises:
    def __init__(self, s: CompromisedCard, pop: Population, rng: Generator, intensity: float,
                 start: float) -> None:
        self.s, self.pop, self.rng = s, pop, rng
        self.per_day = s.per_day * pop.n_cards / 10_000 * intensity
        self.active: list[tuple[int, float, float, float]] = []  # card, begin, end, odds
        self._open(start - s.days_max * DAY, start)

    def _open(self, begin: float, end: float) -> None:
        s, rng = self.s, self.rng
        n = int(rng.poisson(self.per_day * (end - begin) / DAY)) if self.per_day > 0 else 0
        whens = np.sort(begin + rng.random(n) * (end - begin))
        for card, when in zip(self.pop.active_cards(rng, n), whens, strict=True):
            days = rng.uniform(s.days_min, s.days_max)
            share = rng.uniform(s.share_min, s.share_max)
            self.active.append((int(card), float(when), when + days * DAY, share / (1 - share)))

    def day(self, t0: float) -> list[Batch]:
        pop, rng, s, t1 = self.pop, self.rng, self.s, t0 + DAY
        self._open(t0, t1)
        day_w, owl_w = slice_weights(t0)
        out = []
        for card, begin, end, odds in self.active:
            weights = owl_w if pop.owl[card] else day_w
            expected = odds * pop.rate[card] * weights.sum()
            t = sample_times(rng, int(rng.poisson(expected)), t0, weights)
            t = t[(t >= begin) & (t < end)]
            cards = np.full(len(t), card)
            merchants = pop.favourite_merchants(rng, cards)
            amount = pop.legit_amounts(rng, cards, merchants)
            amount *= rng.uniform(s.amount_min, s.amount_max, len(t))
            out.append(Batch.of(t, cards, merchants, amount))
        self.active = [a for a in self.active if a[2] > t1]
        return out
