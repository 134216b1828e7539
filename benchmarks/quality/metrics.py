"""The figures a fraud team reads, on one test period: ranking quality (ROC AUC, average
precision), the daily card precision of an analyst queue, and how many transactions alert.

Card precision@k per day is the metric of the fraud-detection literature (Dal Pozzolo et al.,
2018; the Fraud Detection Handbook by Le Borgne et al.): investigators check k cards a day,
not k transactions, so each day the cards are ranked by their most suspicious transaction of
the day, cards already known to be compromised are left out (their fraud is known, checking
them again finds nothing new), and the share of the k that were truly defrauded that day is
the day's precision. The figure is the mean over the test days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Holdout:
    """The test period's transactions as parallel arrays (index i is one transaction).

    `known_compromised[i]` is the event time at which the card of transaction i was first
    known to be compromised (a fraud label had arrived), +inf if never.
    """

    times: np.ndarray
    cards: np.ndarray  # integer card codes
    fraud: np.ndarray  # bool
    known_compromised: np.ndarray
    start: float
    days: int


@dataclass(frozen=True, slots=True)
class Figures:
    roc_auc: float
    average_precision: float
    card_precision_at_k: float
    alert_rate: float

    def as_dict(self) -> dict[str, float]:
        return {"roc_auc": self.roc_auc, "average_precision": self.average_precision,
                "card_precision_at_k": self.card_precision_at_k, "alert_rate": self.alert_rate}


def ranking(fraud: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision; NaN when one class is missing.

    >>> ranking(np.array([False, True, False, True]), np.array([0.1, 0.9, 0.4, 0.3]))
    (0.75, 0.8333333333333333)
    """
    if fraud.all() or not fraud.any():
        return math.nan, math.nan
    return float(roc_auc_score(fraud, scores)), float(average_precision_score(fraud, scores))


def card_precision_at_k(test: Holdout, scores: np.ndarray, k: int) -> float:
    """Mean over the test days of the share of the day's k most suspicious cards that were
    defrauded that day, leaving out cards already known to be compromised.

    A card is known to be compromised on a day if a fraud label for it had arrived before the
    day started, or if it was among an earlier test day's top k and defrauded then (the
    analysts found it). Ties in score are broken by card code, so results are reproducible.

    >>> t = Holdout(times=np.array([0.0, 10.0, 20.0, 86400.0, 86410.0]),
    ...             cards=np.array([1, 2, 3, 1, 2]), fraud=np.array([True, False, False,
    ...             True, True]), known_compromised=np.full(5, math.inf), start=0.0, days=2)
    >>> card_precision_at_k(t, np.array([0.9, 0.8, 0.1, 0.99, 0.5]), k=1)  # day 2: card 1 found
    1.0
    """
    found: set[int] = set()
    daily: list[float] = []
    for day in range(test.days):
        lo, hi = test.start + day * DAY_S, test.start + (day + 1) * DAY_S
        mask = (test.times >= lo) & (test.times < hi) & (test.known_compromised >= lo)
        if not mask.any():
            continue
        cards, day_scores, day_fraud = test.cards[mask], scores[mask], test.fraud[mask]
        best: dict[int, float] = {}
        defrauded: set[int] = set()
        for card, score, fraud in zip(cards.tolist(), day_scores.tolist(), day_fraud.tolist(),
                                      strict=True):
            if card in found:
                continue
            if score > best.get(card, -math.inf):
                best[card] = score
            if fraud:
                defrauded.add(card)
        top = sorted(best, key=lambda c: (-best[c], c))[:k]
        hits = [c for c in top if c in defrauded]
        found.update(hits)
        daily.append(len(hits) / k)
    return float(np.mean(daily)) if daily else math.nan


def figures(test: Holdout, scores: np.ndarray, k: int, review_threshold: float,
            alerts: np.ndarray | None = None) -> Figures:
    """Every figure of one system on the test set.

    The alert rate is the share of the published decisions that were not `approve` when the
    system publishes decisions (`alerts`: the online champion, whose cold-start fallback
    decides without the score), else the share of scores at or above `review_threshold`.

    >>> t = Holdout(times=np.zeros(4), cards=np.arange(4), fraud=np.array([True, False,
    ...             False, False]), known_compromised=np.full(4, math.inf), start=0.0, days=1)
    >>> scores = np.full(4, 0.5)  # a model that has learned nothing
    >>> approved = np.zeros(4, dtype=bool)  # ... and the warm-up approved everything
    >>> figures(t, scores, 1, 0.2).alert_rate, figures(t, scores, 1, 0.2, approved).alert_rate
    (1.0, 0.0)
    """
    auc, ap = ranking(test.fraud, scores)
    flagged = scores >= review_threshold if alerts is None else alerts
    alert = float(np.mean(flagged)) if len(scores) else math.nan
    return Figures(auc, ap, card_precision_at_k(test, scores, k), alert)
