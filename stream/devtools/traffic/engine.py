"""The simulation: one day at a time, legitimate traffic and every scenario's fraud, merged.

Randomness comes from independent numpy streams (PCG64) spawned from the seed: the population,
legitimate traffic, channels, labels, and one per scenario. So a scenario's fraud does not
change the legitimate traffic, and adding a scenario does not change the others' incidents.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence

from stream.devtools.traffic.legit import Batch, LegitTraffic
from stream.devtools.traffic.traffic_config import TrafficConfig
from stream.devtools.traffic.world import (
    CHANNELS,
    COUNTRY_CODES,
    DAY,
    ECOM,
    HOME_COUNTRIES,
    Population,
)

_CURRENCIES = np.array([c[1] for c in HOME_COUNTRIES], dtype=object)
_COUNTRIES = np.array(COUNTRY_CODES, dtype=object)
_CHANNELS = np.array(CHANNELS, dtype=object)
_CONTACTLESS_BELOW = 60.0  # in-store purchases under this are mostly contactless


@dataclass(frozen=True, slots=True)
class Day:
    """One simulated day's transactions in event-time order; `pattern` is -1 for legit ones."""

    t: np.ndarray  # epoch seconds
    card: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray  # rounded to cents
    channel: np.ndarray
    country: np.ndarray
    pattern: np.ndarray
    first: int  # index of the first transaction in the whole stream
    end: float  # end of the day (the stream's last day may be cut short before it)
    last: bool

    def __len__(self) -> int:
        return len(self.t)


def _rng(*entropy: int) -> Generator:
    return Generator(PCG64(SeedSequence(list(entropy))))


class Simulation:
    """One run of the generator for `config`."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        seed = config.seed % 2**64
        self.pop = Population(_rng(seed, 0), config.n_cards, config.n_merchants,
                              config.mean_tx_per_card_per_day)
        self.start = config.start_time.timestamp()
        self.legit = LegitTraffic(self.pop, _rng(seed, 1), self.start)
        self.misc = _rng(seed, 2)
        self.label_rng = _rng(seed, 3)
        self.intensity = self._intensity()
        self.runners = [
            (code, s.runner(self.pop, _rng(seed, 4, zlib.crc32(s.name.encode()), code),
                            self.intensity, self.start))
            for code, s in enumerate(config.scenarios)
        ]
        self.patterns = np.array([s.name for s in config.scenarios] + [None], dtype=object)
        self.prefix = f"tx-{config.seed}-"
        self.card_names = np.array(self.pop.card_ids, dtype=object)
        self.merchant_names = np.array(self.pop.merchant_ids, dtype=object)
        self.mcc_names = np.array(self.pop.mcc, dtype=object)

    def _intensity(self) -> float:
        """The factor on every scenario's rate that makes the expected fraud share fraud_rate."""
        rate = self.config.fraud_rate
        if rate is None:
            return 1.0
        expected = sum(s.expected_per_day(self.pop) for s in self.config.scenarios)
        if rate == 0 or expected <= 0:
            return 0.0
        return rate / (1 - rate) * self.pop.total_rate / expected

    def expected_fraud_per_day(self) -> dict[str, float]:
        """Each scenario's expected fraudulent transactions per day, at the scaled intensity."""
        out: dict[str, float] = {}
        for s in self.config.scenarios:
            out[s.name] = out.get(s.name, 0.0) + s.expected_per_day(self.pop) * self.intensity
        return out

    def _raw_days(self) -> Iterator[tuple[Batch, np.ndarray, float]]:
        t0 = self.start
        future: list[tuple[Batch, int]] = []
        while True:
            t1 = t0 + DAY
            legit = self.legit.day(t0)
            parts, codes = [legit], [np.full(len(legit.t), -1)]
            pending, future = future, []
            for code, runner in self.runners:
                pending.extend((batch, code) for batch in runner.day(t0))
            for batch, code in pending:
                now = batch.t < t1
                if not now.all():
                    future.append((batch.take(~now), code))
                    batch = batch.take(now)
                parts.append(batch)
                codes.append(np.full(len(batch.t), code))
            merged, pattern = Batch.concat(parts), np.concatenate(codes)
            order = np.argsort(merged.t, kind="stable")
            yield merged.take(order), pattern[order], t1
            t0 = t1

    def days(self) -> Iterator[Day]:
        """The stream, a day at a time, cut to `count` transactions or to `days` of event time."""
        cfg, pop = self.config, self.pop
        end = None if cfg.days is None else self.start + cfg.days * DAY
        remaining = cfg.count
        if remaining == 0 or cfg.days == 0:
            return
        first = 0
        for batch, pattern, t1 in self._raw_days():
            n = len(batch.t)
            if remaining is not None:
                last = n >= remaining
                n = min(n, remaining)
                remaining -= n
            else:
                assert end is not None
                last = t1 >= end
                n = int(np.searchsorted(batch.t, end, side="left")) if last else n
            batch = batch.take(np.arange(n))
            amount = np.maximum(np.rint(batch.amount * 100), 1) / 100
            contactless = (amount < _CONTACTLESS_BELOW) & (self.misc.random(n) < 0.7)
            channel = np.where(pop.online[batch.merchant], ECOM, contactless.astype(np.int64))
            channel = np.where(batch.channel >= 0, batch.channel, channel)
            country = np.where(batch.country >= 0, batch.country, pop.home[batch.card])
            yield Day(batch.t, batch.card, batch.merchant, amount, channel, country,
                      pattern[:n], first, min(t1, end) if end is not None else t1, last)
            first += n
            if last:
                return

    def events(self, day: Day, with_label: bool) -> list[dict[str, Any]]:
        """The day's transactions as contract dicts (with `is_fraud` if `with_label`)."""
        n = len(day)
        ids = [f"{self.prefix}{i:09d}" for i in range(day.first, day.first + n)]
        columns = zip(
            ids,
            self.card_names[day.card].tolist(),
            self.merchant_names[day.merchant].tolist(),
            day.amount.tolist(),
            _CURRENCIES[self.pop.home[day.card]].tolist(),
            self.mcc_names[day.merchant].tolist(),
            _COUNTRIES[day.country].tolist(),
            _CHANNELS[day.channel].tolist(),
            stamps(day.t),
            (day.pattern >= 0).tolist(),
            strict=True,
        )
        if with_label:
            return [{"transaction_id": i, "card_id": c, "merchant_id": m, "amount": a,
                     "currency": cur, "mcc": mcc, "country": co, "channel": ch, "timestamp": ts,
                     "is_fraud": f} for i, c, m, a, cur, mcc, co, ch, ts, f in columns]
        return [{"transaction_id": i, "card_id": c, "merchant_id": m, "amount": a,
                 "currency": cur, "mcc": mcc, "country": co, "channel": ch, "timestamp": ts}
                for i, c, m, a, cur, mcc, co, ch, ts, _ in columns]

def stamps(t: np.ndarray) -> list[str]:
    """RFC 3339 UTC with milliseconds (truncated), e.g. 2026-01-01T00:00:01.234Z."""
    ms = np.floor(t * 1000.0).astype(np.int64).astype("datetime64[ms]")
    return list(np.datetime_as_string(ms, unit="ms", timezone="UTC").tolist())
