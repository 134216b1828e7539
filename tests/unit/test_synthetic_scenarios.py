"""Each fraud scenario behaves as its docstring says, and the text form parses strictly."""

from __future__ import annotations

import collections
import re
import statistics
from functools import cache
from typing import Any

import numpy as np
import pytest
from traffic_streams import SCENARIO_STREAM, by_card, epoch, transactions

from stream.devtools.synthetic import DEFAULT_SCENARIOS, PATTERNS, SCENARIOS, parse_scenarios
from stream.devtools.traffic.bursts import CardTesting, StolenCard
from stream.devtools.traffic.engine import Simulation
from stream.devtools.traffic.scenarios import BreachedMerchant

DAY = 86400.0
Events = list[tuple[dict[str, Any], str | None]]


def of(pattern: str) -> list[dict[str, Any]]:
    return [e for e, p in transactions() if p == pattern]


@cache
def favourites(card_id: str) -> set[str]:
    """The card's favourite merchants, from the population the stream was drawn from."""
    pop = Simulation(SCENARIO_STREAM).pop  # the population alone is cheap to draw again
    card = int(card_id.removeprefix("card-"))
    return {pop.merchant_ids[j] for j in pop.fav[card, : pop.n_fav[card]]}


@cache
def legit_median(card_id: str) -> float | None:
    """The card's median legitimate amount, if it has enough legitimate history to tell."""
    amounts = [e["amount"] for e, p in by_card()[card_id] if p is None]
    return statistics.median(amounts) if len(amounts) >= 5 else None


def ratios(fraud: list[dict[str, Any]]) -> list[float]:
    """Each fraud amount over its card's median legitimate amount."""
    out = []
    for event in fraud:
        median = legit_median(event["card_id"])
        if median is not None:
            out.append(event["amount"] / median)
    assert len(out) >= 0.5 * len(fraud)
    return out


def test_every_scenario_occurs_and_labels_agree() -> None:
    counts = collections.Counter(p for _, p in transactions() if p)
    assert set(counts) == set(PATTERNS)
    assert all(n >= 50 for n in counts.values()), counts
    assert not any("is_fraud" in e for e, _ in transactions())  # the stream's labels are apart


def test_breached_merchant_fraud_lasts_weeks_from_many_cards_then_stops() -> None:
    stream = transactions()
    end = epoch(stream[-1][0]["timestamp"])
    breaches: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for event in of("breached_merchant"):
        breaches[event["merchant_id"]].append(event)
    big = {m: v for m, v in breaches.items() if len(v) >= 20}
    assert len(big) >= 5
    spans = []
    for merchant, fraud in big.items():
        times = [epoch(e["timestamp"]) for e in fraud]
        first, last = min(times), max(times)
        spans.append((last - first) / DAY)
        assert len({e["card_id"] for e in fraud}) >= 0.8 * len(fraud)  # many different cards
        during = [p for e, p in stream
                  if e["merchant_id"] == merchant and first <= epoch(e["timestamp"]) <= last]
        share = sum(p is not None for p in during) / len(during)
        assert 0.08 < share < 0.6, (merchant, share)
        # Breach fraud comes steadily, not in one burst: no gap of more than a week.
        assert max(np.diff(sorted(times)), default=0) < 7 * DAY
    assert max(spans) >= 14 and statistics.median(spans) >= 7
    # Once a breach is over the merchant is clean again (only a stray incident of another
    # scenario can still hit it), and it is never breached twice.
    after = [p for m, v in big.items() if max(epoch(e["timestamp"]) for e in v) < end - 7 * DAY
             for e, p in stream if e["merchant_id"] == m
             and epoch(e["timestamp"]) > max(epoch(x["timestamp"]) for x in v) + DAY]
    assert len(after) >= 200
    assert sum(p is not None for p in after) / len(after) < 0.03
    assert "breached_merchant" not in after


def test_breached_merchant_amounts_look_like_the_cards_ordinary_spending() -> None:
    assert 0.8 < statistics.median(ratios(of("breached_merchant"))) < 3.0


def test_compromised_card_fraud_is_at_its_favourites_with_several_times_its_amounts() -> None:
    fraud = of("compromised_card")
    assert all(e["merchant_id"] in favourites(e["card_id"]) for e in fraud)
    # Seen from the stream alone: the merchants are ones the card uses legitimately too.
    used = {c: {e["merchant_id"] for e, p in v if p is None} for c, v in by_card().items()}
    assert sum(e["merchant_id"] in used[e["card_id"]] for e in fraud) >= 0.85 * len(fraud)
    assert statistics.median(ratios(fraud)) >= 3.0


def test_compromised_card_owner_keeps_transacting_during_the_window() -> None:
    windows: dict[str, list[float]] = collections.defaultdict(list)
    for event in of("compromised_card"):
        windows[event["card_id"]].append(epoch(event["timestamp"]))
    long = {c: t for c, t in windows.items() if len(t) >= 3}
    assert len(long) >= 10
    spans = [(max(t) - min(t)) / DAY for t in long.values()]
    assert statistics.median(spans) > 1.0  # days, not a burst
    ongoing = 0
    for card, times in long.items():
        legit = [epoch(e["timestamp"]) for e, p in by_card()[card] if p is None]
        ongoing += any(min(times) < t < max(times) for t in legit)
    assert ongoing >= 0.8 * len(long)


def test_card_testing_is_bursts_of_tiny_online_amounts_within_minutes() -> None:
    fraud = of("card_testing")
    assert all(0.5 <= e["amount"] <= 5.0 and e["channel"] == "ecom" for e in fraud)
    assert sum(e["mcc"] in ("5815", "8398") for e in fraud) >= 0.5 * len(fraud)
    bursts: dict[str, list[float]] = collections.defaultdict(list)
    for event in fraud:
        bursts[event["card_id"]].append(epoch(event["timestamp"]))
    sizes = [len(t) for t in bursts.values()]
    assert min(sizes) >= 1 and statistics.median(sizes) >= 5
    quick = [t for t in bursts.values() if max(t) - min(t) < 3600]
    assert len(quick) >= 0.8 * len(bursts)


def test_stolen_card_spends_big_at_new_high_value_merchants_often_at_night() -> None:
    fraud = of("stolen_card")
    assert not any(e["merchant_id"] in favourites(e["card_id"]) for e in fraud)
    assert sum(e["mcc"] in ("5732", "5944", "4511", "5311", "5999") for e in fraud) > 0.9 * len(
        fraud)
    spent = ratios(fraud)
    assert statistics.median(spent) >= 2.5
    assert sum(r < 2 for r in spent) >= 0.05 * len(spent)  # some quiet thieves
    night = sum(int(e["timestamp"][11:13]) < 5 for e in fraud) / len(fraud)
    assert night > 0.35
    home = {c: collections.Counter(e["country"] for e, p in v if p is None).most_common(1)[0][0]
            for c, v in by_card().items() if any(p is None for _, p in v)}
    abroad = sum(e["country"] != home.get(e["card_id"], e["country"]) for e in fraud)
    assert 0.1 * len(fraud) < abroad < 0.6 * len(fraud)
    sprees: dict[str, list[float]] = collections.defaultdict(list)
    for event in fraud:
        sprees[event["card_id"]].append(epoch(event["timestamp"]))
    assert statistics.median(max(t) - min(t) for t in sprees.values()) < 6 * 3600


def test_transaction_only_fraud_is_one_large_online_purchase_mostly_at_night() -> None:
    fraud = of("transaction_only")
    assert all(1500 <= e["amount"] <= 5000 and e["channel"] == "ecom" for e in fraud)
    assert sum(int(e["timestamp"][11:13]) < 5 for e in fraud) > 0.6 * len(fraud)
    assert len(fraud) < 0.1 * sum(p is not None for _, p in transactions())


def test_parse_realistic_is_the_five_defaults() -> None:
    assert parse_scenarios("realistic") == DEFAULT_SCENARIOS == tuple(
        cls() for cls in SCENARIOS.values())
    assert parse_scenarios(" realistic ") == DEFAULT_SCENARIOS
    assert [s.name for s in DEFAULT_SCENARIOS] == list(PATTERNS)


def test_parse_names_with_overrides() -> None:
    parsed = parse_scenarios("breached_merchant:per_day=3;days_max=21,card_testing")
    assert parsed == (BreachedMerchant(per_day=3.0, days_max=21.0), CardTesting())
    assert parse_scenarios("stolen_card: size_max = 9 ; p_night=0.1 ") == (
        StolenCard(size_max=9, p_night=0.1),)
    assert isinstance(parse_scenarios("stolen_card:size_max=9")[0].size_max, int)


@pytest.mark.parametrize("text, message", [
    ("skimming", "unknown scenario 'skimming'; valid: realistic, breached_merchant, "
                 "compromised_card, card_testing, stolen_card, transaction_only"),
    ("card_testing,atm", "unknown scenario 'atm'"),
    ("card_testing:rate=3", "unknown parameter 'rate' of card_testing; valid: per_day, size_min"),
    ("card_testing:per_day", "expected per_day=VALUE"),
    ("card_testing:per_day=lots", "per_day must be float"),
    ("card_testing:size_max=2.5", "size_max must be int"),
    ("card_testing:size_min=30", "size_min must be <= size_max"),
    ("stolen_card:p_night=1.5", "p_night must be in [0, 1]"),
    ("breached_merchant:share_max=1", "share_max must be in [0, 1)"),
    ("breached_merchant:per_day=-1", "per_day must be a finite number >= 0"),
    ("", "no scenario given"),
])
def test_parse_rejects_with_the_valid_choices(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_scenarios(text)
