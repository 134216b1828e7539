"""The synthetic generator: reproducible, contract-valid, with the fraud it promises."""

from __future__ import annotations

import collections
import json
import re
import statistics
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from stream.data.synthetic import PATTERNS, TrafficConfig, generate, generate_annotated

SCHEMA = Path(__file__).resolve().parents[2] / "topics" / "transactions.schema.json"
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@cache
def annotated(count: int, fraud_rate: float, seed: int) -> list[tuple[dict[str, Any], str | None]]:
    """50k events take about half a second; several tests share each stream."""
    return list(generate_annotated(TrafficConfig(count, fraud_rate=fraud_rate, seed=seed)))


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_same_seed_same_events_and_other_seed_differs() -> None:
    first = list(generate(TrafficConfig(2000, seed=3)))
    again = list(generate(TrafficConfig(2000, seed=3)))
    other = list(generate(TrafficConfig(2000, seed=4)))
    assert first == again
    assert first != other


@pytest.mark.parametrize("count", [0, 1, 17, 5000])
def test_count_is_exact(count: int) -> None:
    assert sum(1 for _ in generate(TrafficConfig(count, fraud_rate=0.2))) == count


def test_annotated_events_are_the_plain_events() -> None:
    config = TrafficConfig(3000, fraud_rate=0.05, seed=11)
    assert [e for e, _ in generate_annotated(config)] == list(generate(config))


def test_timestamps_are_rfc3339_ms_and_non_decreasing() -> None:
    events = [e for e, _ in annotated(50_000, 0.05, 7)]
    stamps = [e["timestamp"] for e in events]
    assert all(RFC3339_MS.match(s) for s in stamps)
    times = [epoch(s) for s in stamps]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    assert times[0] >= datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_start_moves_event_time_and_naive_start_means_utc() -> None:
    start = datetime(2030, 6, 1, 12, 0)
    events = list(generate(TrafficConfig(100, start=start)))
    assert events[0]["timestamp"].startswith("2030-06-01T1")
    assert epoch(events[0]["timestamp"]) >= start.replace(tzinfo=UTC).timestamp()


def test_events_follow_the_transactions_contract() -> None:
    ids = set()
    for event, _ in annotated(50_000, 0.05, 7):
        assert isinstance(event["transaction_id"], str) and event["transaction_id"]
        assert re.fullmatch(r"card-\d{6}", event["card_id"])
        assert re.fullmatch(r"m-\d{5}", event["merchant_id"])
        amount = event["amount"]
        assert isinstance(amount, float) and amount >= 0 and round(amount, 2) == amount
        assert isinstance(event["is_fraud"], bool)
        assert event["currency"] in {"USD", "GBP", "EUR", "CAD", "AUD"}
        assert re.fullmatch(r"\d{4}", event["mcc"])
        assert re.fullmatch(r"[A-Z]{2}", event["country"])
        assert event["channel"] in {"pos", "contactless", "ecom"}
        ids.add(event["transaction_id"])
    assert len(ids) == 50_000


def test_events_validate_against_the_json_schema() -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for event in generate(TrafficConfig(1000, fraud_rate=0.1, seed=5)):
        validator.validate(event)


@pytest.mark.parametrize("fraud_rate", [0.01, 0.05])
@pytest.mark.parametrize("seed", [7, 2024])
def test_fraud_rate_is_close_to_the_target(fraud_rate: float, seed: int) -> None:
    events = annotated(50_000, fraud_rate, seed)
    share = sum(e["is_fraud"] for e, _ in events) / len(events)
    assert share == pytest.approx(fraud_rate, rel=0.2)


def test_no_fraud_when_rate_is_zero() -> None:
    assert not any(e["is_fraud"] for e in generate(TrafficConfig(5000, fraud_rate=0.0)))


def test_labels_and_patterns_agree_and_every_pattern_occurs() -> None:
    events = annotated(50_000, 0.01, 7)
    assert all(e["is_fraud"] == (p is not None) for e, p in events)
    counts = collections.Counter(p for _, p in events if p)
    assert set(counts) == set(PATTERNS)
    assert all(n >= 30 for n in counts.values())


def test_card_testing_is_bursts_of_small_online_amounts() -> None:
    by_card: dict[str, list[float]] = collections.defaultdict(list)
    for event, pattern in annotated(50_000, 0.01, 7):
        if pattern == "card_testing":
            assert 0.5 <= event["amount"] <= 5.0
            assert event["channel"] == "ecom"
            by_card[event["card_id"]].append(epoch(event["timestamp"]))
    bursts = [times for times in by_card.values() if len(times) >= 5]
    assert bursts
    # Most bursts fit in well under an hour (a card can rarely be tested twice).
    quick = [t for t in bursts if max(t) - min(t) < 3600]
    assert len(quick) >= 0.8 * len(bursts)


def test_compromised_merchant_has_a_sizeable_share_of_fraud_during_the_window() -> None:
    events = annotated(50_000, 0.01, 7)
    windows: dict[str, list[float]] = collections.defaultdict(list)
    cards: dict[str, set[str]] = collections.defaultdict(set)
    for event, pattern in events:
        if pattern == "compromised_merchant":
            windows[event["merchant_id"]].append(epoch(event["timestamp"]))
            cards[event["merchant_id"]].add(event["card_id"])
    assert windows
    merchant = max(windows, key=lambda m: len(windows[m]))
    start, end = min(windows[merchant]), max(windows[merchant])
    during = [e for e, _ in events
              if e["merchant_id"] == merchant and start <= epoch(e["timestamp"]) <= end]
    share = sum(e["is_fraud"] for e in during) / len(during)
    assert share >= 0.15
    assert len(cards[merchant]) >= 5
    assert 3600 <= end - start <= 5 * 86400


def test_stolen_card_spends_several_times_the_usual_amount() -> None:
    events = annotated(50_000, 0.01, 7)
    legit: dict[str, list[float]] = collections.defaultdict(list)
    for event, pattern in events:
        if pattern is None:
            legit[event["card_id"]].append(event["amount"])
    ratios = [event["amount"] / statistics.median(legit[event["card_id"]])
              for event, pattern in events
              if pattern == "stolen_card" and len(legit[event["card_id"]]) >= 3]
    assert ratios
    assert statistics.median(ratios) >= 2.5


def test_legit_traffic_is_quieter_at_night_but_not_silent() -> None:
    legit = [e for e, p in annotated(50_000, 0.05, 7) if p is None]
    night = sum(1 for e in legit if int(e["timestamp"][11:13]) < 5) / len(legit)
    assert 0.01 < night < 0.12  # 5 of 24 hours would be 0.21 if flat


def test_fraud_is_detectable_from_card_history() -> None:
    """A single velocity feature (card's transactions in the past hour) already beats chance."""
    metrics = pytest.importorskip("sklearn.metrics")
    recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
    scores, labels = [], []
    for event in generate(TrafficConfig(20_000, fraud_rate=0.05, seed=7)):
        t, queue = epoch(event["timestamp"]), recent[event["card_id"]]
        while queue and queue[0] < t - 3600:
            queue.popleft()
        scores.append(len(queue))
        labels.append(event["is_fraud"])
        queue.append(t)
    assert metrics.roc_auc_score(labels, scores) > 0.65


@pytest.mark.parametrize(
    "kwargs",
    [{"count": -1}, {"fraud_rate": 1.0}, {"fraud_rate": -0.1}, {"n_cards": 0},
     {"n_merchants": 0}, {"mean_tx_per_card_per_day": 0.0}],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any]) -> None:
    params: dict[str, Any] = {"count": 10, **kwargs}
    with pytest.raises(ValueError):
        TrafficConfig(**params)


def test_tiny_populations_still_work() -> None:
    events = list(generate(TrafficConfig(500, fraud_rate=0.1, n_cards=1, n_merchants=1)))
    assert len(events) == 500
    assert {e["card_id"] for e in events} == {"card-000000"}
