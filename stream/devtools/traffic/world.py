"""Cards and merchants with their habits, drawn once per run, and the daily and weekly cycle.

Everything is a numpy array indexed by card or merchant number, so that the simulation can draw
a whole day of events at once. Event time is UTC and the UTC hour is treated as every
cardholder's local hour.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.random import Generator

DAY = 86400.0
HOUR = 3600.0
CHANNELS = ("pos", "contactless", "ecom")
ECOM = 2

# (mcc, amount scale vs the card's typical amount, probability the merchant is online, popularity)
CATEGORIES = (
    ("5411", 1.0, 0.05, 18.0), ("5812", 1.2, 0.0, 12.0), ("5814", 0.4, 0.0, 12.0),  # food
    ("5541", 1.4, 0.0, 9.0), ("5912", 0.8, 0.1, 6.0), ("4121", 0.7, 0.8, 5.0),  # fuel, drugs, taxi
    ("5311", 2.0, 0.3, 6.0), ("5651", 2.2, 0.4, 7.0), ("5999", 1.5, 0.6, 5.0),  # retail
    ("5815", 0.3, 1.0, 4.0), ("8398", 0.8, 1.0, 1.0),  # digital goods, charities
    ("5732", 5.0, 0.5, 3.0), ("5944", 7.0, 0.2, 1.0),  # electronics, jewellery
    ("7011", 5.0, 0.7, 2.0), ("4511", 9.0, 0.9, 1.5),  # hotels, airlines
)
TESTING_MCCS = ("5815", "8398")  # where card testers like to probe
HIGH_VALUE_MCCS = ("5732", "5944", "4511", "5311", "5999")  # where thieves cash out
# (country, currency, weight) of home countries; legitimate travel goes to another home country
# or, less often, to one of the "risky" ones, which fraudsters use more.
HOME_COUNTRIES = (("US", "USD", 40.0), ("GB", "GBP", 14.0), ("DE", "EUR", 10.0),
                  ("FR", "EUR", 9.0), ("ES", "EUR", 6.0), ("IT", "EUR", 6.0), ("NL", "EUR", 5.0),
                  ("CA", "CAD", 6.0), ("AU", "AUD", 4.0))
RISKY_COUNTRIES = ("BR", "NG", "RU", "ID", "VN", "UA", "PH", "RO")
COUNTRY_CODES = tuple(c[0] for c in HOME_COUNTRIES) + RISKY_COUNTRIES
_TRAVEL_WEIGHTS = np.array([c[2] for c in HOME_COUNTRIES] + [1.5] * len(RISKY_COUNTRIES))

# Legitimate behaviour (see the README section "Synthetic traffic").
P_FAVOURITE = 0.75  # a purchase at one of the card's favourite merchants
P_BIG_PURCHASE = 0.015  # a purchase 3-12x the card's usual amount
P_TRIP_PER_DAY = 1 / 150  # a cardholder at home starts a trip abroad
TRIP_DAYS = (2.0, 12.0)
P_ABROAD_ON_TRIP = 0.85  # the rest are online purchases at home while away
OWL_SHARE = 0.08  # night-owl cardholders
POPULARITY_CAP = 20.0  # merchant popularity: Pareto(1.3) capped, so no merchant dominates
MAX_FAVOURITES = 8

# Relative intensity per hour of day (0..23); normalised to mean 1 below.
_WEEKDAY = (0.15, 0.09, 0.06, 0.05, 0.06, 0.14, 0.35, 0.7, 1.0, 1.1, 1.2, 1.3,
            1.45, 1.35, 1.25, 1.2, 1.25, 1.4, 1.5, 1.4, 1.15, 0.9, 0.6, 0.3)
_WEEKEND = (0.3, 0.2, 0.12, 0.08, 0.06, 0.07, 0.12, 0.3, 0.6, 0.9, 1.15, 1.3,
            1.45, 1.45, 1.4, 1.35, 1.35, 1.4, 1.45, 1.4, 1.25, 1.0, 0.75, 0.5)
_OWL = (1.3, 1.25, 1.15, 1.0, 0.8, 0.6, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9,
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.45, 1.4)
_DAY_FACTOR = (0.97, 0.97, 0.99, 1.01, 1.1, 1.06, 0.9)  # Monday..Sunday; normalised to mean 1


def _norm(values: tuple[float, ...]) -> np.ndarray:
    array = np.array(values)
    return array / array.mean()


_PROFILES = (_norm(_WEEKDAY), _norm(_WEEKEND), _norm(_OWL), _norm(_DAY_FACTOR))


@lru_cache(maxsize=64)
def _weights_cached(week_phase_s: int) -> tuple[np.ndarray, np.ndarray]:
    weekday, weekend, owl, factor = _PROFILES
    starts = week_phase_s + HOUR * np.arange(24)
    hour = (starts // HOUR % 24).astype(int)
    dow = ((starts // DAY + 3) % 7).astype(int)  # 1970-01-01 was a Thursday
    day_w = np.where(dow >= 5, weekend[hour], weekday[hour]) * factor[dow] / 24
    return day_w, owl[hour] * factor[dow] / 24


def slice_weights(t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected share of a card's daily count in each hour after `t0`: (daytime, night owl).

    Each sums to the weekday factor of that day (1 on average over a week).
    """
    return _weights_cached(int(t0) % (7 * 86400))


def sample_times(rng: Generator, n: int, t0: float, weights: np.ndarray) -> np.ndarray:
    """`n` moments in the 24 hours after `t0`, hour by hour in proportion to `weights`."""
    slot = rng.choice(24, size=n, p=weights / weights.sum())
    return t0 + (slot + rng.random(n)) * HOUR


def pick_weighted(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn in proportion to the increments of the cumulative weights `cum`."""
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)


class Population:
    """Cards and merchants, drawn once from `rng`.

    Cards: home country and currency, typical amount (lognormal), spread, activity (gamma), night
    owl or not, and 3-8 favourite merchants with Zipf-like weights. Merchants: a category from
    `CATEGORIES`, online or not, and a heavy-tailed but capped popularity.
    """

    def __init__(self, rng: Generator, n_cards: int, n_merchants: int, mean_tx: float) -> None:
        self.n_cards, self.n_merchants = n_cards, n_merchants
        self.merchant_ids = [f"m-{j:05d}" for j in range(n_merchants)]
        weights = np.array([c[3] for c in CATEGORIES])
        category = rng.choice(len(CATEGORIES), size=n_merchants, p=weights / weights.sum())
        self.mcc = [CATEGORIES[c][0] for c in category]
        self.scale = np.array([c[1] for c in CATEGORIES])[category]
        self.online = rng.random(n_merchants) < np.array([c[2] for c in CATEGORIES])[category]
        popularity = np.minimum(1.0 + rng.pareto(1.3, n_merchants), POPULARITY_CAP)
        self.pop_cum = np.cumsum(popularity)
        mccs = np.array(self.mcc)
        self.testing = _first_nonempty(np.isin(mccs, TESTING_MCCS) & self.online, self.online)
        self.online_merchants = _first_nonempty(self.online)
        high_value = np.isin(mccs, HIGH_VALUE_MCCS)
        self.high_value = _first_nonempty(high_value)
        self.online_high_value = _first_nonempty(high_value & self.online, high_value)

        self.card_ids = [f"card-{i:06d}" for i in range(n_cards)]
        home_cum = np.cumsum([c[2] for c in HOME_COUNTRIES])
        self.home = pick_weighted(home_cum, rng.random(n_cards))
        self.typical = rng.lognormal(3.1, 0.55, n_cards)
        self.sigma = rng.uniform(0.35, 0.75, n_cards)
        activity = rng.gamma(2.0, 0.5, n_cards)
        self.rate = mean_tx * activity / activity.mean()  # expected transactions per day
        self.rate_cum = np.cumsum(self.rate)
        self.owl = rng.random(n_cards) < OWL_SHARE
        self.n_fav = rng.integers(3, MAX_FAVOURITES + 1, n_cards)
        self.fav = self.popular_merchants(rng, n_cards * MAX_FAVOURITES).reshape(n_cards, -1)
        slot = np.arange(MAX_FAVOURITES)
        fav_w = np.where(slot < self.n_fav[:, None], 1.0 / (slot + 1.0), 0.0)
        fav_w /= fav_w.sum(axis=1, keepdims=True)
        self.fav_cum = np.cumsum(fav_w, axis=1)
        self.fav_cum[:, -1] = 1.0

        # Each merchant's expected share of legitimate traffic (to size breaches).
        self.total_rate = float(self.rate.sum())
        self.owl_rate = float(self.rate[self.owl].sum())
        on_trip = P_TRIP_PER_DAY * sum(TRIP_DAYS) / 2
        abroad = P_ABROAD_ON_TRIP * on_trip / (1 + on_trip)
        fav_share = np.bincount(self.fav.ravel(), (self.rate[:, None] * fav_w).ravel(),
                                n_merchants) / self.total_rate
        pop_share = popularity / popularity.sum()
        self.merchant_share = ((1 - abroad) * (P_FAVOURITE * fav_share +
                                               (1 - P_FAVOURITE) * pop_share) + abroad * pop_share)
        self.share_cum = np.cumsum(self.merchant_share)

    def popular_merchants(self, rng: Generator, n: int) -> np.ndarray:
        """Merchants drawn by popularity (a purchase somewhere new)."""
        return pick_weighted(self.pop_cum, rng.random(n))

    def busy_merchant(self, rng: Generator) -> int:
        """A merchant drawn in proportion to its share of legitimate traffic."""
        return int(pick_weighted(self.share_cum, rng.random(1))[0])

    def active_cards(self, rng: Generator, n: int) -> np.ndarray:
        """Cards drawn in proportion to their activity."""
        return pick_weighted(self.rate_cum, rng.random(n))

    def favourite_merchants(self, rng: Generator, cards: np.ndarray) -> np.ndarray:
        """One of each card's favourite merchants, by the card's own weights."""
        slot = (self.fav_cum[cards] < rng.random(len(cards))[:, None]).sum(axis=1)
        return self.fav[cards, np.minimum(slot, MAX_FAVOURITES - 1)]

    def is_favourite(self, card: int, merchant: int) -> bool:
        return bool(np.any(self.fav[card, : self.n_fav[card]] == merchant))

    def legit_amounts(self, rng: Generator, cards: np.ndarray, merchants: np.ndarray) -> np.ndarray:
        """What each card ordinarily spends at each merchant (its category's scale, lognormal)."""
        noise = np.exp(self.sigma[cards] * rng.standard_normal(len(cards)))
        return self.typical[cards] * self.scale[merchants] * noise

    def foreign_countries(self, rng: Generator, cards: np.ndarray, risky: float) -> np.ndarray:
        """A country index other than each card's home: a risky one with probability `risky`,
        else a travel destination (mostly other home countries)."""
        n = len(cards)
        picked = pick_weighted(np.cumsum(_TRAVEL_WEIGHTS), rng.random(n))
        home = self.home[cards]
        same = picked == home
        picked[same] = (home[same] + 1 + rng.integers(0, len(COUNTRY_CODES) - 1, int(same.sum()))
                        ) % len(COUNTRY_CODES)
        to_risky = rng.random(n) < risky
        risky_idx = len(HOME_COUNTRIES) + rng.integers(0, len(RISKY_COUNTRIES), n)
        return np.where(to_risky, risky_idx, picked)

    def day_weights(self, t0: float) -> np.ndarray:
        """Hourly weights of the whole population's traffic in the day after `t0` (a merchant
        sees its customers' mix of daytime and night-owl cards; this is the average mix)."""
        day_w, owl_w = slice_weights(t0)
        owl = self.owl_rate / self.total_rate if self.total_rate > 0 else 0.0
        return (1 - owl) * day_w + owl * owl_w


def _first_nonempty(*masks: np.ndarray) -> np.ndarray:
    """Indices of the first mask with any True; all indices if none has."""
    for mask in masks:
        found = np.flatnonzero(mask)
        if len(found):
            return found
    return np.arange(len(masks[0]))
