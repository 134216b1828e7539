"""Batch baselines: what a fraud team's weekly retraining job would reach on the same stream.

Each model is trained at the start of every test week on the transactions of the training
window (the weeks before a delay period) whose label had arrived by then, with the features
the online model computed at decision time; it then scores the week. Nothing it sees was
unknown at training time: labels arriving later, and the delay period's transactions (most
of whose labels are still missing), stay out, as in Dal Pozzolo et al. (2018).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.quality.dataset import DAY_S, Dataset

WEEK_S = 7 * DAY_S


@dataclass(frozen=True, slots=True)
class Protocol:
    """Train on `train_days`, skip `delay_days`, test on the week that follows, up to the end.

    For a six-week stream: days 7-28 train, 28-35 delay, 35-42 test (the first week warms up
    the feature state and is never trained on).
    """

    train_days: float = 21.0
    delay_days: float = 7.0
    test_days: float = 7.0

    def test_window(self, data: Dataset) -> tuple[float, float]:
        end = data.start + round((data.end - data.start) / DAY_S) * DAY_S
        return end - self.test_days * DAY_S, end

    def train_window(self, test_from: float) -> tuple[float, float]:
        train_to = test_from - self.delay_days * DAY_S
        return train_to - self.train_days * DAY_S, train_to


def _model(kind: str, seed: int) -> object:
    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05,
                                          random_state=seed)


def run_batch(data: Dataset, features: np.ndarray, protocol: Protocol, kind: str,
              seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """Scores for every transaction of the test period (NaN elsewhere), retrained weekly.

    Returns the scores and, per retraining, how many labelled examples it had.
    """
    trained: dict[str, float] = {}
    scores = train_and_score(data, features, protocol, lambda: _model(kind, seed), trained)
    return scores, trained


def train_and_score(data: Dataset, features: np.ndarray, protocol: Protocol,
                    make: Callable[[], Any], trained: dict[str, float] | None = None,
                    ) -> np.ndarray:
    """`run_batch` for any scikit-learn classifier `make` builds (`trained`, when given,
    receives the number of labelled examples per retraining)."""
    scores = np.full(len(data.transactions), np.nan)
    label_time = np.array(data.label_time)
    test_from, test_to = protocol.test_window(data)
    week = test_from
    while week < test_to:
        lo, hi = protocol.train_window(week)
        train = (data.times >= lo) & (data.times < hi) & (label_time <= week)
        y = data.fraud[train]
        if y.all() or not y.any():
            raise ValueError(
                f"the training window before {week - data.start:.0f}s has {len(y)} labelled "
                "transactions of one class only: give the stream more days (or fewer "
                "--train-days/--delay-days)")
        model = make()
        model.fit(features[train], y)
        test = (data.times >= week) & (data.times < min(week + WEEK_S, test_to))
        scores[test] = model.predict_proba(features[test])[:, 1]
        if trained is not None:
            trained[f"{week:.0f}"] = float(train.sum())
        week += WEEK_S
    return scores
