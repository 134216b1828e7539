"""Delayed labels: `generate_stream`, `LabelModel`, and training on topic-style labels."""

from __future__ import annotations

import collections
import statistics
from typing import Any

import numpy as np
import pytest
from traffic_streams import SCENARIO_STREAM, epoch, records, validator

from stream.batch.source import synthetic_items
from stream.batch.train import train
from stream.contracts.messages import Label, Transaction
from stream.core.pipeline import PipelineConfig
from stream.devtools.synthetic import LabelModel, TrafficConfig, generate, generate_stream

DAY = 86400.0


def delays() -> dict[bool, list[float]]:
    """Label delay in days, by outcome, over the scenario stream."""
    sent: dict[str, float] = {}
    out: dict[bool, list[float]] = {True: [], False: []}
    for kind, body, _ in records():
        if kind == "transaction":
            sent[body["transaction_id"]] = epoch(body["timestamp"])
        else:
            out[body["is_fraud"]].append((epoch(body["timestamp"]) - sent[body["transaction_id"]])
                                         / DAY)
    return out


def test_every_transaction_gets_exactly_one_label_after_it_with_its_outcome() -> None:
    seen: dict[str, tuple[str, str | None]] = {}
    labelled: collections.Counter[str] = collections.Counter()
    for kind, body, pattern in records():
        if kind == "transaction":
            assert "is_fraud" not in body
            seen[body["transaction_id"]] = (body["card_id"], pattern)
        else:
            assert set(body) == {"transaction_id", "card_id", "is_fraud", "timestamp"}
            card, expected = seen[body["transaction_id"]]  # never before its transaction
            assert body["card_id"] == card
            assert body["is_fraud"] is (expected is not None) and pattern == expected
            labelled[body["transaction_id"]] += 1
    assert set(labelled) == set(seen) and set(labelled.values()) == {1}


def test_records_are_in_event_time_and_outstanding_labels_follow_the_last_transaction() -> None:
    stream = records()
    times = [epoch(body["timestamp"]) for _, body, _ in stream]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    last = max(i for i, (kind, _, _) in enumerate(stream) if kind == "transaction")
    tail = stream[last + 1:]
    assert tail and all(kind == "label" for kind, _, _ in tail)
    interleaved = sum(kind == "label" for kind, _, _ in stream[:last])
    assert interleaved > 0.5 * len(stream) / 2  # most labels arrive while the stream runs


def test_fraud_labels_take_about_a_week_and_vary_legit_ones_follow_the_period() -> None:
    by_outcome = delays()
    fraud, legit = by_outcome[True], by_outcome[False]
    assert len(fraud) >= 1000
    assert 6.0 < statistics.median(fraud) < 8.0
    assert statistics.stdev(fraud) > 1.5  # a distribution, not a constant
    assert min(fraud) >= 1.0 - 0.001 and max(fraud) <= 45.0
    assert sum(d < 4 for d in fraud) > 0 and sum(d > 12 for d in fraud) > 0
    assert min(legit) >= 7.0 - 0.001 and max(legit) <= 8.0
    assert statistics.stdev(legit) > 0.2


def test_records_validate_against_the_topic_schemas() -> None:
    checks = {"transaction": validator("transactions"), "label": validator("labels")}
    for kind, body, _ in records()[::20]:
        checks[kind].validate(body)


def test_the_stream_carries_exactly_the_generated_transactions() -> None:
    config = TrafficConfig(4000, fraud_rate=0.05, seed=8)
    streamed = [body for kind, body, _ in generate_stream(config) if kind == "transaction"]
    assert streamed == [{k: v for k, v in e.items() if k != "is_fraud"}
                        for e in generate(config)]


def test_days_mode_ends_with_the_outstanding_labels() -> None:
    config = TrafficConfig.for_days(2.0, n_cards=200, seed=1)
    stream = list(generate_stream(config))
    kinds = collections.Counter(kind for kind, _, _ in stream)
    assert kinds["transaction"] == kinds["label"] > 1000
    assert stream[-1][0] == "label" and epoch(stream[-1][1]["timestamp"]) > 8 * DAY + epoch(
        "2026-01-01T00:00:00Z")


def test_a_label_model_changes_only_the_labels() -> None:
    base = SCENARIO_STREAM
    quick = TrafficConfig.for_days(base.days or 0, fraud_rate=base.fraud_rate, seed=base.seed,
                                   n_cards=base.n_cards, n_merchants=base.n_merchants,
                                   mean_tx_per_card_per_day=base.mean_tx_per_card_per_day,
                                   labels=LabelModel.constant(3600.0))
    mine = [(kind, body) for kind, body, _ in generate_stream(quick)]
    tx = [body for kind, body in mine if kind == "transaction"]
    assert tx == [body for kind, body, _ in records() if kind == "transaction"]
    sent = {body["transaction_id"]: epoch(body["timestamp"]) for body in tx}
    lags = {round(epoch(b["timestamp"]) - sent[b["transaction_id"]])
            for kind, b in mine if kind == "label"}
    assert lags == {3600}


@pytest.mark.parametrize("kwargs", [
    {"fraud_median_days": 0.0}, {"fraud_sigma": -1.0}, {"fraud_min_days": 50.0},
    {"legit_days": float("nan")},
])
def test_bad_label_models_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LabelModel(**kwargs)


def test_label_delays_are_drawn_per_outcome() -> None:
    rng = np.random.default_rng(5)
    outcome = np.arange(20_000) % 2 == 0
    drawn = LabelModel(fraud_median_days=3.0, legit_days=2.0, legit_jitter_days=0.0).delays_s(
        rng, outcome) / DAY
    assert np.median(drawn[outcome]) == pytest.approx(3.0, rel=0.05)
    assert set(drawn[~outcome]) == {2.0}
    assert LabelModel.constant(0.0).delays_s(rng, outcome).max() == 0.0


def test_synthetic_items_with_delayed_labels_train_the_pipeline_from_label_records() -> None:
    items = list(synthetic_items(3000, seed=4, fraud_rate=0.05, delayed_labels=True))
    txs = [item for _, item, _ in items if isinstance(item, Transaction)]
    labels = [item for _, item, _ in items if isinstance(item, Label)]
    assert len(txs) == len(labels) == 3000
    assert all(tx.is_fraud is None for tx in txs)
    assert sum(label.is_fraud for label in labels) > 50
    result = train(items, PipelineConfig())
    assert result.stats.transactions == 3000 and result.stats.labels == 3000
    assert result.stats.learned == 3000  # every label found its transaction's pending features
    in_event = list(synthetic_items(3000, seed=4, fraud_rate=0.05))
    assert [item.transaction_id for _, item, _ in in_event] == [tx.transaction_id for tx in txs]
    assert all(isinstance(item, Transaction) and item.is_fraud is not None
               for _, item, _ in in_event)


def test_synthetic_items_rejects_a_bad_scenario_at_once() -> None:
    from stream.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scenario"):
        synthetic_items(10, scenario="nope")
