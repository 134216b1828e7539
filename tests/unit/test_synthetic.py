"""The synthetic generator: reproducible, contract-valid, with the fraud rate and population it
promises. Scenario behaviour: test_synthetic_scenarios.py; delayed labels: test_synthetic_labels.py.
"""

from __future__ import annotations

import collections
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from traffic_streams import annotated, big_population, epoch, transactions, validator

from stream.devtools.synthetic import (
    PATTERNS,
    SCENARIOS,
    TrafficConfig,
    generate,
    generate_annotated,
    parse_scenarios,
)
from stream.devtools.traffic.engine import Simulation

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_same_seed_same_events_and_other_seed_differs() -> None:
    first = list(generate(TrafficConfig(3000, seed=3)))
    again = list(generate(TrafficConfig(3000, seed=3)))
    other = list(generate(TrafficConfig(3000, seed=4)))
    assert first == again
    assert first != other


@pytest.mark.parametrize("count", [0, 1, 17, 5000, 20_001])
def test_count_is_exact(count: int) -> None:
    assert sum(1 for _ in generate(TrafficConfig(count, fraud_rate=0.2))) == count


def test_days_sets_the_length_in_event_time() -> None:
    config = TrafficConfig.for_days(3.5, n_cards=300, seed=2)
    events = list(generate(config))
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    times = [epoch(e["timestamp"]) for e in events]
    assert start <= times[0] and times[-1] < start + 3.5 * 86400
    assert times[-1] > start + 3.4 * 86400
    assert len(events) == pytest.approx(3.5 * 300 * 3.0, rel=0.15)
    assert TrafficConfig(None, days=3.5, n_cards=300, seed=2) == config
    assert list(generate(TrafficConfig.for_days(0))) == []


def test_a_shorter_stream_is_a_prefix_of_a_longer_one() -> None:
    short = list(generate(TrafficConfig(4000, seed=5)))
    assert list(generate(TrafficConfig(9000, seed=5)))[:4000] == short


def test_annotated_events_are_the_plain_events() -> None:
    config = TrafficConfig(3000, fraud_rate=0.05, seed=11)
    assert [e for e, _ in generate_annotated(config)] == list(generate(config))


def test_timestamps_are_rfc3339_ms_and_non_decreasing() -> None:
    stamps = [e["timestamp"] for e, _ in transactions()]
    assert all(RFC3339_MS.match(s) for s in stamps)
    times = [epoch(s) for s in stamps]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    assert times[0] >= datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_start_moves_event_time_and_naive_start_means_utc() -> None:
    start = datetime(2030, 6, 1, 12, 0)
    events = list(generate(TrafficConfig(100, start=start)))
    assert events[0]["timestamp"].startswith("2030-06-01T1")
    assert epoch(events[0]["timestamp"]) >= start.replace(tzinfo=UTC).timestamp()


def test_events_follow_the_transactions_contract_and_schema() -> None:
    check = validator("transactions")
    events = list(generate_annotated(big_population(50_000, 0.05, 7)))
    ids = set()
    for event, pattern in events:
        assert list(event) == ["transaction_id", "card_id", "merchant_id", "amount", "currency",
                               "mcc", "country", "channel", "timestamp", "is_fraud"]
        assert re.fullmatch(r"card-\d{6}", event["card_id"])
        assert re.fullmatch(r"m-\d{5}", event["merchant_id"])
        amount = event["amount"]
        assert isinstance(amount, float) and amount >= 0.01 and round(amount, 2) == amount
        assert event["is_fraud"] is (pattern is not None)
        assert event["currency"] in {"USD", "GBP", "EUR", "CAD", "AUD"}
        assert re.fullmatch(r"\d{4}", event["mcc"])
        assert re.fullmatch(r"[A-Z]{2}", event["country"])
        assert event["channel"] in {"pos", "contactless", "ecom"}
        ids.add(event["transaction_id"])
    assert len(ids) == len(events) == 50_000
    for event, _ in events[:: 25]:
        check.validate(event)


@pytest.mark.parametrize("fraud_rate", [0.01, 0.05])
@pytest.mark.parametrize("seed", [7, 2024])
def test_fraud_rate_is_close_to_the_target(fraud_rate: float, seed: int) -> None:
    """On the benchmark's population: breaches are large lumps of fraud, so the realised rate
    of a short stream varies (about 8% relative standard deviation at 1% and 200,000 events)."""
    count = 200_000 if fraud_rate < 0.02 else 100_000
    fraud = sum(p is not None for _, p in generate_annotated(big_population(count, fraud_rate,
                                                                            seed)))
    assert fraud / count == pytest.approx(fraud_rate, rel=0.2)


@pytest.mark.parametrize("fraud_rate", [0.003, 0.01, 0.2])
def test_the_scaling_is_analytic_and_keeps_the_mix(fraud_rate: float) -> None:
    config = big_population(10, fraud_rate, 7)
    sim = Simulation(config)
    expected = sim.expected_fraud_per_day()
    legit_per_day = 10_000 * 1.2
    assert sum(expected.values()) == pytest.approx(fraud_rate / (1 - fraud_rate) * legit_per_day)
    unscaled = Simulation(TrafficConfig(10, fraud_rate=None, n_cards=10_000, n_merchants=5_000,
                                        mean_tx_per_card_per_day=1.2)).expected_fraud_per_day()
    for name in PATTERNS:  # the same proportions, whatever the target
        assert expected[name] / sum(expected.values()) == pytest.approx(
            unscaled[name] / sum(unscaled.values()))


def test_every_scenario_has_a_sizeable_share_and_transaction_only_a_small_one() -> None:
    events = annotated(big_population(200_000, 0.01, 7))
    counts = collections.Counter(p for _, p in events if p)
    fraud = sum(counts.values())
    assert set(counts) == set(PATTERNS) == set(SCENARIOS)
    for name in ("breached_merchant", "compromised_card", "card_testing", "stolen_card"):
        assert 0.1 < counts[name] / fraud < 0.5, (name, counts)
    assert 0.01 < counts["transaction_only"] / fraud < 0.1


def test_no_fraud_when_rate_is_zero_and_unscaled_when_none() -> None:
    assert not any(e["is_fraud"] for e in generate(TrafficConfig(5000, fraud_rate=0.0)))
    unscaled = TrafficConfig(100_000, fraud_rate=None, seed=3, n_cards=10_000, n_merchants=5_000,
                             mean_tx_per_card_per_day=1.2)
    events = list(generate_annotated(unscaled))
    share = sum(e["is_fraud"] for e, _ in events) / len(events)
    assert 0.004 < share < 0.015  # the defaults are about 0.8% on this population


def test_legit_traffic_is_the_same_whatever_the_fraud() -> None:
    none = [e for e in generate(TrafficConfig(5000, fraud_rate=0.0, seed=9))]
    some = [e for e in generate(TrafficConfig(5000, fraud_rate=0.1, seed=9)) if not e["is_fraud"]]
    n = len(some)
    strip = [{k: v for k, v in e.items() if k not in ("transaction_id", "channel")} for e in none]
    assert [{k: v for k, v in e.items() if k not in ("transaction_id", "channel")}
            for e in some] == strip[:n]


def test_the_busiest_merchant_gets_well_under_one_percent() -> None:
    events = annotated(big_population(200_000, 0.01, 7))
    counts = collections.Counter(e["merchant_id"] for e, _ in events)
    assert len(counts) > 4500
    assert counts.most_common(1)[0][1] / len(events) < 0.005


def test_legit_traffic_has_a_daily_and_weekly_cycle() -> None:
    legit = [e for e, p in transactions() if p is None]
    night = sum(1 for e in legit if int(e["timestamp"][11:13]) < 5) / len(legit)
    assert 0.02 < night < 0.12  # 5 of 24 hours would be 0.21 if flat
    weekday = collections.Counter(datetime.fromisoformat(e["timestamp"]).weekday()
                                  for e in legit)
    assert weekday[4] > 1.1 * weekday[6]  # Fridays are busier than Sundays
    assert min(weekday.values()) > 0.7 * max(weekday.values())


def test_legit_noise_travel_new_merchants_and_big_purchases_exist() -> None:
    legit = [e for e, p in transactions() if p is None]
    homes = {e["card_id"]: collections.Counter() for e in legit}
    for e in legit:
        homes[e["card_id"]][e["country"]] += 1
    abroad = sum(sum(c.values()) - c.most_common(1)[0][1] for c in homes.values()) / len(legit)
    assert 0.005 < abroad < 0.08
    big = sum(e["amount"] >= 1500 for e in legit) / len(legit)
    assert 0 < big < 0.002  # large legitimate purchases exist, but are rare


def test_amounts_alone_do_not_give_the_fraud_away() -> None:
    """The amount alone separates some scenarios, not the mix (history is needed)."""
    metrics = pytest.importorskip("sklearn.metrics")
    events = annotated(big_population(200_000, 0.01, 7))
    labels = [e["is_fraud"] for e, _ in events]
    auc = metrics.roc_auc_score(labels, [e["amount"] for e, _ in events])
    assert 0.45 < auc < 0.75
    breach = [(p is not None, e["amount"]) for e, p in events if p in (None, "breached_merchant")]
    auc = metrics.roc_auc_score([b for b, _ in breach], [a for _, a in breach])
    assert auc < 0.65  # breach fraud looks like ordinary spending


@pytest.mark.parametrize(
    "kwargs",
    [{"count": -1}, {"fraud_rate": 1.0}, {"fraud_rate": -0.1}, {"n_cards": 0},
     {"n_merchants": 0}, {"mean_tx_per_card_per_day": 0.0}, {"days": 3.0},
     {"count": None}, {"count": None, "days": -1.0}, {"scenarios": ()},
     {"scenarios": "realistic"}],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any]) -> None:
    params: dict[str, Any] = {"count": 10, **kwargs}
    with pytest.raises(ValueError):
        TrafficConfig(**params)


def test_tiny_populations_still_work() -> None:
    events = list(generate(TrafficConfig(500, fraud_rate=0.1, n_cards=1, n_merchants=1)))
    assert len(events) == 500
    assert {e["card_id"] for e in events} == {"card-000000"}
    assert {e["merchant_id"] for e in events} == {"m-00000"}


def test_one_scenario_alone_makes_all_the_fraud() -> None:
    config = TrafficConfig(20_000, fraud_rate=0.05, seed=4,
                           scenarios=parse_scenarios("stolen_card"))
    counts = collections.Counter(p for _, p in generate_annotated(config))
    assert set(counts) == {None, "stolen_card"}
    assert counts["stolen_card"] / 20_000 == pytest.approx(0.05, rel=0.3)
