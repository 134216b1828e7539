"""The detection-quality floor: a small, fixed-seed version of `make quality` that fails when a
change breaks learning (features, scoring, labels or event time).

Functional, not a timing test: the stream, the partitioning and the scores are deterministic.
The floors sit below today's figures at 4 partitions, a model each (ROC AUC 0.789, average
precision 0.140 at 1% fraud; 0.806 / 0.089 before the feature crosses, whose unclamped form
fell to 0.676 here) and far above what a model that learns nothing gets (0.5 and the fraud
rate).
"""

from __future__ import annotations

import logging
from functools import cache

import numpy as np
import pytest

from benchmarks.quality.batch import Protocol
from benchmarks.quality.dataset import Dataset, build
from benchmarks.quality.learners import CANDIDATES, record, replay
from benchmarks.quality.metrics import Figures, figures
from benchmarks.quality.online import run_online
from stream.contracts.messages import Transaction
from stream.devtools.synthetic import TrafficConfig

AUC_FLOOR = 0.70
AP_FLOOR = 0.05


@cache
def dataset() -> Dataset:
    return build(TrafficConfig(None, days=35, n_cards=1200, n_merchants=600, fraud_rate=0.01,
                               seed=11, mean_tx_per_card_per_day=1.2))


def figures_on_test_week(data: Dataset, scores: np.ndarray,
                         alerts: np.ndarray | None = None) -> Figures:
    idx, holdout = data.holdout(*Protocol().test_window(data))
    return figures(holdout, scores[idx], k=100, review_threshold=0.2,
                   alerts=None if alerts is None else alerts[idx])


@pytest.fixture(autouse=True)
def _quiet_drift() -> None:
    logging.getLogger("stream.core.pipeline").setLevel(logging.ERROR)


def test_the_champion_at_four_partitions_stays_above_the_floor() -> None:
    data = dataset()
    assert 40_000 < len(data.transactions) < 60_000
    assert data.n_labels > len(data.transactions) // 2
    run = run_online(data, partitions=4)
    assert run.labels_learned > len(data.transactions) // 2
    result = figures_on_test_week(data, run.scores)
    assert result.roc_auc >= AUC_FLOOR, result
    assert result.average_precision >= AP_FLOOR, result
    # The cold start: the first labels of each partition were decided by the fallback, the
    # test week (weeks later) by the score, so its alert rate is the decisions' and the scores'.
    idx, _ = data.holdout(*Protocol().test_window(data))
    assert run.warming.any() and not run.warming[idx].any()
    assert not run.alerts[run.warming].any()  # the default fallback approves
    by_decisions = figures_on_test_week(data, run.scores, run.alerts).alert_rate
    assert 0 < by_decisions == result.alert_rate


def test_the_floor_fails_a_model_that_never_learns() -> None:
    """Without its labels the same pipeline scores everything alike: far under both floors."""
    data = dataset()
    unlabelled = Dataset(items=[i for i in data.items if isinstance(i, Transaction)],
                         transactions=data.transactions, index=data.index,
                         label_time=data.label_time, start=data.start, end=data.end,
                         fraud=data.fraud, times=data.times)
    run = run_online(unlabelled, partitions=4)
    assert run.labels_learned == 0
    result = figures_on_test_week(data, run.scores)
    assert result.roc_auc < AUC_FLOOR - 0.1 and result.average_precision < AP_FLOOR / 2
    # Its scores would send everything to review; the warm-up's fallback sent nothing.
    assert result.alert_rate == 1.0 and run.warming.all()
    assert figures_on_test_week(data, run.scores, run.alerts).alert_rate == 0.0


def test_the_shared_merchant_table_at_four_partitions_stays_above_the_floor() -> None:
    data = dataset()
    shared = run_online(data, partitions=4, shared_merchants=True)
    result = figures_on_test_week(data, shared.scores)
    assert result.roc_auc >= AUC_FLOOR and result.average_precision >= AP_FLOOR, result
    apart = run_online(data, partitions=4)
    assert not np.array_equal(shared.scores, apart.scores)  # the table is really in use


def test_the_learner_replay_is_the_champion_bit_for_bit() -> None:
    """`benchmarks.quality.learners` judges candidates by replaying the champion's features
    in its order; the champion's own candidate must then reproduce its scores exactly."""
    data = dataset()
    champion = run_online(data, partitions=1, warmup_labels=0)
    scores = replay(record(data), CANDIDATES["sgd0.005-log-clip-avg3-x20"])
    assert np.array_equal(scores, champion.scores)
