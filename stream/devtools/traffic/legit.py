"""Legitimate spending, one simulated day at a time, drawn with numpy in a handful of calls.

Each card is a Poisson process whose intensity is its activity times the hourly profile of its
kind (daytime or night owl) times the weekday factor; the whole population is then a Poisson
process per hour of the day, and a card is drawn for each arrival in proportion to its activity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.random import Generator

from stream.devtools.traffic.world import (
    DAY,
    HOUR,
    P_ABROAD_ON_TRIP,
    P_BIG_PURCHASE,
    P_FAVOURITE,
    P_TRIP_PER_DAY,
    TRIP_DAYS,
    Population,
    pick_weighted,
    slice_weights,
)


@dataclass(frozen=True, slots=True)
class Batch:
    """Events as parallel arrays; `channel` and `country` are -1 where they follow the defaults
    (the merchant's channel; the card's home country)."""

    t: np.ndarray
    card: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    channel: np.ndarray
    country: np.ndarray

    @staticmethod
    def of(t: np.ndarray, card: np.ndarray | int, merchant: np.ndarray | int,
           amount: np.ndarray, channel: int = -1, country: np.ndarray | int = -1) -> Batch:
        n = len(t)

        def full(value: np.ndarray | int) -> np.ndarray:
            return value if isinstance(value, np.ndarray) else np.full(n, value, dtype=np.int64)

        return Batch(t, full(card), full(merchant), amount, full(channel), full(country))

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        if not batches:
            empty_f, empty_i = np.empty(0), np.empty(0, dtype=np.int64)
            return Batch(empty_f, empty_i, empty_i, empty_f, empty_i, empty_i)
        return Batch(*(np.concatenate([getattr(b, name) for b in batches])
                       for name in ("t", "card", "merchant", "amount", "channel", "country")))

    def take(self, index: np.ndarray) -> Batch:
        return Batch(self.t[index], self.card[index], self.merchant[index], self.amount[index],
                     self.channel[index], self.country[index])


class LegitTraffic:
    """The population's legitimate transactions; cards also travel (trips of 2-12 days)."""

    def __init__(self, pop: Population, rng: Generator, start: float) -> None:
        self.pop, self.rng = pop, rng
        self.groups = []
        for mask in (~pop.owl, pop.owl):
            members = np.flatnonzero(mask)
            if len(members):
                self.groups.append((members, np.cumsum(pop.rate[members]), mask is pop.owl))
        # Start in steady state: some cardholders are already away.
        n = pop.n_cards
        mean_trip = sum(TRIP_DAYS) / 2
        on_trip = P_TRIP_PER_DAY * mean_trip / (1 + P_TRIP_PER_DAY * mean_trip)
        away = rng.random(n) < on_trip
        length = rng.uniform(*TRIP_DAYS, n) * DAY
        began = start - rng.random(n) * length
        self.trip_start = np.where(away, began, -np.inf)
        self.trip_end = np.where(away, began + length, -np.inf)
        self.trip_country = pop.foreign_countries(rng, np.arange(n), 0.0)

    def _plan_trips(self, t0: float) -> None:
        rng, n = self.rng, self.pop.n_cards
        leaving = (self.trip_end < t0) & (rng.random(n) < P_TRIP_PER_DAY)
        cards = np.flatnonzero(leaving)
        begin = t0 + rng.random(len(cards)) * DAY
        self.trip_start[cards] = begin
        self.trip_end[cards] = begin + rng.uniform(*TRIP_DAYS, len(cards)) * DAY
        self.trip_country[cards] = self.pop.foreign_countries(rng, cards, 0.0)

    def day(self, t0: float) -> Batch:
        """Every legitimate transaction in [t0, t0 + 1 day), unsorted."""
        rng, pop = self.rng, self.pop
        self._plan_trips(t0)
        day_w, owl_w = slice_weights(t0)
        times, cards = [], []
        for members, cum, owl in self.groups:
            counts = rng.poisson(cum[-1] * (owl_w if owl else day_w))
            n = int(counts.sum())
            slot = np.repeat(np.arange(24), counts)
            times.append(t0 + (slot + rng.random(n)) * HOUR)
            cards.append(members[pick_weighted(cum, rng.random(n))])
        t = np.concatenate(times) if times else np.empty(0)
        card = np.concatenate(cards) if cards else np.empty(0, dtype=np.int64)
        n = len(t)
        abroad = ((t >= self.trip_start[card]) & (t < self.trip_end[card])
                  & (rng.random(n) < P_ABROAD_ON_TRIP))
        favourite = (rng.random(n) < P_FAVOURITE) & ~abroad
        merchant = pop.popular_merchants(rng, n)
        merchant[favourite] = pop.favourite_merchants(rng, card[favourite])
        amount = pop.legit_amounts(rng, card, merchant)
        big = np.flatnonzero(rng.random(n) < P_BIG_PURCHASE)
        amount[big] *= rng.uniform(3.0, 12.0, len(big))
        country = np.where(abroad, self.trip_country[card], pop.home[card])
        return Batch.of(t, card, merchant, amount, country=country)
