"""Seeded synthetic card traffic with realistic fraud patterns, for demos, tests and benchmarks.

Why simulate rather than ship a data set: the demo and the benchmarks need an endless, reproducible
stream whose fraud is learnable only from history (per-card velocity, amount relative to the
card's habits, merchant fraud rate from past labels, hour of day), which is the kind of signal the
online model exists to learn.

Event time is simulated and independent of the wall clock: legitimate traffic is a Poisson arrival
process over the card population whose intensity follows a daily cycle (UTC hour is treated as
every cardholder's local hour). Fraud incidents are scheduled into the future on a heap and merged
with the legitimate stream, so timestamps never go backwards. Three patterns are mixed:

- card testing: a burst of 5-20 tiny amounts (0.50-5.00) on one card within minutes, online,
  mostly at a digital-goods or charity merchant the card has never used;
- compromised merchant: for hours to days a merchant sees extra fraudulent transactions from many
  cards, often with inflated amounts, so a sizeable share of its traffic is fraud;
- stolen card: after a theft the card's next 2-6 transactions are several times its typical
  amount, at new high-value merchants, often at night, sometimes abroad.

Noise keeps it honest: legitimate big purchases, night-owl cardholders, travel abroad, purchases
at new merchants, and some quiet stolen-card fraud with ordinary amounts.

The share of fraudulent events tracks `fraud_rate` with a feedback budget: every emitted event
adds `fraud_rate` to the budget and every scheduled fraud event spends one, and an incident starts
when the budget covers its size. Incident timing stays random while the rate stays close.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
PATTERNS = ("card_testing", "compromised_merchant", "stolen_card")

_HOUR = 3600.0
_DAY = 86400.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Relative intensity per hour of day (0..23), normalised to mean 1 below.
_DAY_PROFILE = (0.15, 0.09, 0.06, 0.05, 0.06, 0.14, 0.35, 0.7, 1.0, 1.1, 1.2, 1.3,
                1.45, 1.35, 1.25, 1.2, 1.25, 1.4, 1.5, 1.4, 1.15, 0.9, 0.6, 0.3)
_OWL_PROFILE = (1.3, 1.25, 1.15, 1.0, 0.8, 0.6, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9,
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.45, 1.4)

# Share of fraudulent *events* per pattern, and the mean incident size used to turn those shares
# into incident probabilities.
_PATTERN_SHARE = {"card_testing": 0.35, "compromised_merchant": 0.30, "stolen_card": 0.35}
_PATTERN_MEAN_SIZE = {"card_testing": 12.5, "compromised_merchant": 30.0, "stolen_card": 4.0}

_P_FAVOURITE = 0.78  # legit purchase at one of the card's favourite merchants
_P_BIG_PURCHASE = 0.015  # legit purchase several times the card's typical amount
_P_TRAVEL = 0.012  # legit purchase abroad


@dataclass(frozen=True)
class TrafficConfig:
    """What to generate; the same config always yields the same events."""

    count: int
    fraud_rate: float = 0.01
    seed: int = 7
    n_cards: int = 2000
    n_merchants: int = 400
    start: datetime | None = None
    mean_tx_per_card_per_day: float = 3.0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if not 0.0 <= self.fraud_rate < 1.0:
            raise ValueError(f"fraud_rate must be in [0, 1), got {self.fraud_rate}")
        if self.n_cards < 1 or self.n_merchants < 1:
            raise ValueError("n_cards and n_merchants must be >= 1")
        if not self.mean_tx_per_card_per_day > 0:
            raise ValueError("mean_tx_per_card_per_day must be > 0")


def generate(config: TrafficConfig) -> Iterator[dict[str, Any]]:
    """Yield exactly `config.count` transaction events in non-decreasing event time."""
    for event, _pattern in generate_annotated(config):
        yield event


def generate_annotated(config: TrafficConfig) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Like `generate`, with the fraud pattern behind each event (None for legitimate ones).

    The pattern is kept out of the event itself so that no model can learn it as a feature.
    """
    return _Simulation(config).run()


class _TimeFormatter:
    """RFC 3339 UTC with milliseconds, fast: the date part is cached per day (it dominated)."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def format(self, epoch_s: float) -> str:
        ms = math.floor(epoch_s * 1000.0)
        day, rem = divmod(ms, 86_400_000)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")
            self._days[day] = prefix
        seconds, milli = divmod(rem, 1000)
        hour, seconds = divmod(seconds, 3600)
        minute, seconds = divmod(seconds, 60)
        return f"{prefix}{hour:02d}:{minute:02d}:{seconds:02d}.{milli:03d}Z"


# (mcc, amount scale vs the card's typical amount, probability the merchant is online, popularity)
_CATEGORIES = (
    ("5411", 1.0, 0.05, 18.0), ("5812", 1.2, 0.0, 12.0), ("5814", 0.4, 0.0, 12.0),  # food
    ("5541", 1.4, 0.0, 9.0), ("5912", 0.8, 0.1, 6.0), ("4121", 0.7, 0.8, 5.0),  # fuel, drugs, taxi
    ("5311", 2.0, 0.3, 6.0), ("5651", 2.2, 0.4, 7.0), ("5999", 1.5, 0.6, 5.0),  # retail
    ("5815", 0.3, 1.0, 4.0), ("8398", 0.8, 1.0, 1.0),  # digital goods, charities
    ("5732", 5.0, 0.5, 3.0), ("5944", 7.0, 0.2, 1.0),  # electronics, jewellery
    ("7011", 5.0, 0.7, 2.0), ("4511", 9.0, 0.9, 1.5),  # hotels, airlines
)
_TESTING_MCCS = frozenset({"5815", "8398"})  # where card testers like to probe
_HIGH_VALUE_MCCS = frozenset({"5732", "5944", "4511", "5311", "5999"})  # where thieves cash out
# (country, currency, weight) for home countries; travel goes to another of these.
_COUNTRIES = (("US", "USD", 40.0), ("GB", "GBP", 14.0), ("DE", "EUR", 10.0), ("FR", "EUR", 9.0),
              ("ES", "EUR", 6.0), ("IT", "EUR", 6.0), ("NL", "EUR", 5.0), ("CA", "CAD", 6.0),
              ("AU", "AUD", 4.0))
_RISKY_COUNTRIES = ("BR", "NG", "RU", "ID", "VN", "UA", "PH", "RO")


class Population:
    """Cards and merchants with their habits, drawn once from the seeded RNG.

    Stored as parallel lists rather than objects: the generator touches them for every event.
    """

    def __init__(self, rng: random.Random, n_cards: int, n_merchants: int) -> None:
        self.rng = rng
        # Merchants: category, channel and a heavy-tailed popularity.
        cat_cum = list(accumulate(c[3] for c in _CATEGORIES))
        self.merchant_id = [f"m-{j:05d}" for j in range(n_merchants)]
        cats = [_CATEGORIES[bisect_right(cat_cum, rng.random() * cat_cum[-1])]
                for _ in range(n_merchants)]
        self.mcc = [c[0] for c in cats]
        self.scale = [c[1] for c in cats]
        self.online = [rng.random() < c[2] for c in cats]
        popularity = [min(rng.paretovariate(1.3), 50.0) for _ in range(n_merchants)]
        self.pop_cum = list(accumulate(popularity))
        everything = list(range(n_merchants))
        self.testing = [j for j in everything if self.mcc[j] in _TESTING_MCCS and self.online[j]]
        self.testing = self.testing or [j for j in everything if self.online[j]] or everything
        self.high_value = [j for j in everything if self.mcc[j] in _HIGH_VALUE_MCCS] or everything
        # Cards: home country, typical amount and spread, activity, favourite merchants.
        country_cum = list(accumulate(c[2] for c in _COUNTRIES))
        self.card_id = [f"card-{i:06d}" for i in range(n_cards)]
        self.home = [bisect_right(country_cum, rng.random() * country_cum[-1])
                     for _ in range(n_cards)]
        self.card_typical = [rng.lognormvariate(3.1, 0.55) for _ in range(n_cards)]
        self.sigma = [rng.uniform(0.35, 0.75) for _ in range(n_cards)]
        activity = [rng.gammavariate(2.0, 0.5) for _ in range(n_cards)]
        owl = [rng.random() < 0.08 for _ in range(n_cards)]
        self.favourites = [sorted({self._popular_merchant() for _ in range(rng.randint(3, 8))})
                           for _ in range(n_cards)]
        day_w = [0.0 if o else a for a, o in zip(activity, owl, strict=True)]
        owl_w = [a if o else 0.0 for a, o in zip(activity, owl, strict=True)]
        self.day_cum, self.owl_cum = list(accumulate(day_w)), list(accumulate(owl_w))
        total = sum(activity)
        self.owl_weight_share = self.owl_cum[-1] / total
        # Each merchant's expected share of legit traffic, to size compromise windows.
        share = [(1 - _P_FAVOURITE) * p / self.pop_cum[-1] for p in popularity]
        for a, favs in zip(activity, self.favourites, strict=True):
            for j in favs:
                share[j] += _P_FAVOURITE * a / total / len(favs)
        self.merchant_share = share
        self.share_cum = list(accumulate(share))

    def _popular_merchant(self) -> int:
        return bisect_right(self.pop_cum, self.rng.random() * self.pop_cum[-1])

    def pick_card(self, owl: bool) -> int:
        """An active card, weighted by activity, from the night-owl or the daytime population."""
        cum = self.owl_cum if owl and self.owl_cum[-1] > 0 else self.day_cum
        if cum[-1] <= 0:
            cum = self.owl_cum
        return min(bisect_right(cum, self.rng.random() * cum[-1]), len(cum) - 1)

    def random_card(self) -> int:
        return self.rng.randrange(len(self.card_id))

    def testing_merchant(self) -> int:
        if self.rng.random() < 0.7:
            return self.rng.choice(self.testing)
        return self.rng.randrange(len(self.merchant_id))

    def busy_merchant(self) -> int:
        """A merchant weighted by traffic, so a compromise window lasts hours to days."""
        j = bisect_right(self.share_cum, self.rng.random() * self.share_cum[-1])
        return min(j, len(self.merchant_id) - 1)

    def new_high_value_merchant(self, card: int) -> int:
        favs = self.favourites[card]
        for _ in range(8):
            j = self.rng.choice(self.high_value)
            if j not in favs:
                return j
        return self.rng.randrange(len(self.merchant_id))

    def foreign_country(self, card: int, risky: bool) -> str:
        if risky and self.rng.random() < 0.6:
            return self.rng.choice(_RISKY_COUNTRIES)
        home = self.home[card]
        k = self.rng.randrange(len(_COUNTRIES) - 1)
        return _COUNTRIES[k if k < home else k + 1][0]

    def legit_amount(self, card: int, merchant: int) -> float:
        noise = math.exp(self.sigma[card] * self.rng.gauss(0.0, 1.0))
        return self.card_typical[card] * self.scale[merchant] * noise

    def event(self, card: int, merchant: int, amount: float, *, channel: str | None = None,
              country: str | None = None) -> dict[str, Any]:
        """The contract fields except id, timestamp and label (added when it is emitted)."""
        home = _COUNTRIES[self.home[card]]
        if channel is None:
            if self.online[merchant]:
                channel = "ecom"
            else:
                channel = "contactless" if amount < 60 and self.rng.random() < 0.7 else "pos"
        return {"card_id": self.card_id[card], "merchant_id": self.merchant_id[merchant],
                "amount": max(amount, 0.01), "currency": home[1], "mcc": self.mcc[merchant],
                "country": country or home[0], "channel": channel}

    def legit_event(self, card: int) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < _P_FAVOURITE:
            favs = self.favourites[card]
            merchant = favs[int(rng.random() * len(favs))]
        else:
            merchant = self._popular_merchant()
        amount = self.legit_amount(card, merchant)
        if rng.random() < _P_BIG_PURCHASE:
            amount *= rng.uniform(3.0, 12.0)
        country = self.foreign_country(card, risky=False) if rng.random() < _P_TRAVEL else None
        return self.event(card, merchant, round(amount, 2), country=country)


def _normalised(profile: tuple[float, ...]) -> list[float]:
    mean = sum(profile) / len(profile)
    return [p / mean for p in profile]


class _Simulation:
    """One run of the generator; all randomness comes from one `random.Random(seed)`."""

    def __init__(self, config: TrafficConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.pop = Population(self.rng, config.n_cards, config.n_merchants)
        start = config.start or DEFAULT_START
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = start.timestamp()
        self.fmt = _TimeFormatter()
        self.pending: list[tuple[float, int, dict[str, Any], str]] = []
        self.seq = 0
        # Piecewise-constant hourly arrival rates (events per second) for both populations.
        total_rate = config.n_cards * config.mean_tx_per_card_per_day / _DAY
        owl_share = self.pop.owl_weight_share
        day_p, owl_p = _normalised(_DAY_PROFILE), _normalised(_OWL_PROFILE)
        self.rate = [total_rate * ((1 - owl_share) * d + owl_share * o)
                     for d, o in zip(day_p, owl_p, strict=True)]
        self.p_owl = [total_rate * owl_share * o / r for o, r in zip(owl_p, self.rate, strict=True)]
        self.legit_per_s = sum(self.rate) / 24
        names = list(PATTERNS)
        weights = [_PATTERN_SHARE[n] / _PATTERN_MEAN_SIZE[n] for n in names]
        self.pattern_names, self.pattern_cum = names, list(accumulate(weights))
        self.next_pattern, self.next_size = self._plan_incident()
        self.budget = 0.0
        if config.fraud_rate > 0:
            # Start as if the stream had been running: incidents already under way at `start`
            # would otherwise be missing, and the fraud rate would fall short by that backlog.
            self.budget = self._expected_backlog() + self.rng.random() * self.next_size

    def _expected_backlog(self) -> float:
        """Expected number of scheduled-but-not-yet-emitted fraud events in steady state.

        Little's law: backlog = fraud events per second x mean wait between scheduling and
        emission, per pattern. The waits follow the incident code below.
        """
        # Stolen cards: 2 h on average, then 60% wait for the next night (00:00-05:00).
        night = sum(w * (0.0 if (h + 2.5) % 24 < 5 else 26.5 - (h + 2.5) % 24)
                    for h, w in enumerate(self.rate)) / sum(self.rate) * _HOUR
        # Compromised merchants: half the window, for a mean size and E[(1-s)/s] = 1.5.
        shares = self.pop.merchant_share
        window = sum(s * self._compromise_window(s, 30.0, 1.5) for s in shares) / sum(shares)
        waits = {"card_testing": 1100.0, "stolen_card": 2 * _HOUR + 0.6 * night + 1500.0,
                 "compromised_merchant": window / 2}
        rate = self.cfg.fraud_rate
        fraud_per_s = rate / (1 - rate) * self.legit_per_s
        return fraud_per_s * sum(_PATTERN_SHARE[name] * waits[name] for name in PATTERNS)

    def _compromise_window(self, merchant_share: float, size: float, odds: float) -> float:
        """Seconds for `size` fraud events to be `1/(1+odds)` of the merchant's traffic."""
        seconds = size * odds / max(merchant_share * self.legit_per_s, 1e-9)
        return min(max(seconds, 2 * _HOUR), 4 * _DAY)

    def _next_arrival(self, t: float) -> float:
        """Next legit arrival of the inhomogeneous Poisson process (exact, hour by hour)."""
        need = self.rng.expovariate(1.0)
        while True:
            hour_start = math.floor(t / _HOUR) * _HOUR
            rate = self.rate[int(hour_start // _HOUR) % 24]
            room = (hour_start + _HOUR - t) * rate
            if need <= room:
                return t + need / rate
            need -= room
            t = hour_start + _HOUR

    @staticmethod
    def _hour(t: float) -> int:
        return int(t // _HOUR) % 24

    def _next_night(self, t: float) -> float:
        """A random moment between 00:00 and 05:00 at or after `t` (fraudsters like the night)."""
        if self._hour(t) < 5:
            return t
        midnight = math.floor(t / _DAY) * _DAY + _DAY
        return midnight + self.rng.uniform(0.0, 5 * _HOUR)

    def run(self) -> Iterator[tuple[dict[str, Any], str | None]]:
        cfg, rng, pop = self.cfg, self.rng, self.pop
        pending, fmt, prefix = self.pending, self.fmt, f"tx-{cfg.seed}-"
        rate_budget = cfg.fraud_rate
        t_legit = self._next_arrival(self.start)
        for i in range(cfg.count):
            if pending and pending[0][0] <= t_legit:
                t, _, event, pattern = heapq.heappop(pending)
                event["is_fraud"] = True
                label: str | None = pattern
            else:
                t = t_legit
                owl = rng.random() < self.p_owl[self._hour(t)]
                event = pop.legit_event(pop.pick_card(owl))
                label = None
                t_legit = self._next_arrival(t)
            self.budget += rate_budget
            if label is None and rate_budget > 0 and self.budget >= self.next_size:
                self._start_incident(t)
            out = {"transaction_id": f"{prefix}{i:09d}", **event, "timestamp": fmt.format(t)}
            out.setdefault("is_fraud", False)
            yield out, label

    def _plan_incident(self) -> tuple[str, int]:
        rng = self.rng
        k = bisect_right(self.pattern_cum, rng.random() * self.pattern_cum[-1])
        name = self.pattern_names[min(k, len(self.pattern_names) - 1)]
        if name == "card_testing":
            return name, rng.randint(5, 20)
        if name == "stolen_card":
            return name, rng.randint(2, 6)
        return name, rng.randint(12, 48)

    def _schedule(self, t: float, event: dict[str, Any], pattern: str) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (t, self.seq, event, pattern))
        self.budget -= 1.0

    def _start_incident(self, t: float) -> None:
        name, size = self.next_pattern, self.next_size
        if name == "card_testing":
            self._card_testing(t, size)
        elif name == "stolen_card":
            self._stolen_card(t, size)
        else:
            self._compromised_merchant(t, size)
        self.next_pattern, self.next_size = self._plan_incident()

    def _card_testing(self, t: float, size: int) -> None:
        rng, pop = self.rng, self.pop
        card = pop.random_card()
        merchant = pop.testing_merchant()
        t += rng.uniform(0.0, 1800.0)
        for _ in range(size):
            if rng.random() < 0.25:  # some testers rotate merchants
                merchant = pop.testing_merchant()
            amount = round(rng.uniform(0.5, 5.0), 2)
            self._schedule(t, pop.event(card, merchant, amount, channel="ecom"), "card_testing")
            t += 2.0 + rng.expovariate(1 / 35.0)

    def _stolen_card(self, t: float, size: int) -> None:
        rng, pop = self.rng, self.pop
        card = pop.random_card()
        t += rng.expovariate(1 / (2 * _HOUR))
        if rng.random() < 0.6:
            t = self._next_night(t)
        country = pop.foreign_country(card, risky=True) if rng.random() < 0.35 else None
        typical = pop.card_typical[card]
        for _ in range(size):
            merchant = pop.new_high_value_merchant(card)
            if rng.random() < 0.2:  # quiet fraud: ordinary-looking amounts
                amount = typical * rng.uniform(0.8, 2.5)
            else:
                amount = typical * rng.uniform(3.0, 12.0)
            event = pop.event(card, merchant, round(amount, 2), country=country)
            self._schedule(t, event, "stolen_card")
            t += 60.0 + rng.expovariate(1 / 1500.0)

    def _compromised_merchant(self, t: float, size: int) -> None:
        rng, pop = self.rng, self.pop
        merchant = pop.busy_merchant()
        share = rng.uniform(0.25, 0.6)  # fraction of the merchant's traffic that is fraud
        duration = self._compromise_window(pop.merchant_share[merchant], size, (1 - share) / share)
        times = sorted(t + rng.uniform(0.0, duration) for _ in range(size))
        for when in times:
            card = pop.random_card()
            amount = pop.legit_amount(card, merchant)
            if rng.random() < 0.7:
                amount *= rng.uniform(1.5, 4.0)
            event = pop.event(card, merchant, round(amount, 2))
            self._schedule(when, event, "compromised_merchant")
