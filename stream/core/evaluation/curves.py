"""Batch ranking metrics over (label, score) pairs, computed exactly as scikit-learn does.

Why not River here: River's rolling ROC AUC counts a tied positive/negative pair as a miss
instead of one half, which misjudges a cold model (every score is 0.5) and tree challengers
(scores are leaf frequencies, so ties are common); its RollingPRAUC interpolates a different
area than average precision; and `stream compare` needs the curves themselves to draw. One
numpy sort of the pairs gives all of it in about a millisecond for 10,000 pairs, so the
rolling evaluation recomputes on read (once a second) instead of on every label.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Curve:
    """Points of a curve, in drawing order; `area` is its summary number (AUC or AP)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    area: float


@dataclass(frozen=True, slots=True)
class Ranking:
    """Cumulative true/false positives at each distinct score, highest score first."""

    tps: np.ndarray
    fps: np.ndarray
    thresholds: np.ndarray

    @property
    def positives(self) -> int:
        return int(self.tps[-1]) if len(self.tps) else 0

    @property
    def negatives(self) -> int:
        return int(self.fps[-1]) if len(self.fps) else 0


def ranking(pairs: Collection[tuple[bool, float]]) -> Ranking:
    """Sort once; every curve and area below is read from this."""
    if not pairs:
        empty = np.zeros(0)
        return Ranking(empty, empty, empty)
    data = np.fromiter(pairs, dtype=np.dtype([("y", np.bool_), ("s", np.float64)]),
                       count=len(pairs))
    return ranking_of(data["y"], data["s"])


def ranking_of(labels: np.ndarray, scores: np.ndarray) -> Ranking:
    """`ranking` of pairs held as two arrays, in any order.

    Why any sort will do: the counts are read only at the end of each group of equal
    scores, and those are the same whichever order a group's members come in, so the
    unstable sort (a third of the stable one's time on 10,000 scores) gives the same
    figures as scikit-learn's.

    >>> r = ranking_of(np.array([True, False, True]), np.array([0.5, 0.5, 0.9]))
    >>> r.tps.tolist(), r.fps.tolist(), r.thresholds.tolist()
    ([1.0, 2.0], [0.0, 1.0], [0.9, 0.5])
    """
    if not len(scores):
        empty = np.zeros(0)
        return Ranking(empty, empty, empty)
    order = np.argsort(-scores)
    labels, scores = labels[order], scores[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie group
    tps = np.cumsum(labels, dtype=np.float64)[last]
    return Ranking(tps, (last + 1) - tps, scores[last])


def roc_auc(rank: Ranking) -> float:
    """Area under the ROC curve (trapezoids: a tied positive/negative pair counts one half)."""
    pos, neg = rank.positives, rank.negatives
    if pos == 0 or neg == 0:
        return math.nan
    x = np.r_[0.0, rank.fps / neg]
    y = np.r_[0.0, rank.tps / pos]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def average_precision(rank: Ranking) -> float:
    """scikit-learn's AP: precision at each threshold weighted by the recall gained there.

    No interpolation, so it never flatters a model the way a trapezoid under the PR curve can.
    """
    pos = rank.positives
    if pos == 0:
        return math.nan
    recall = np.r_[0.0, rank.tps / pos]
    precision = rank.tps / (rank.tps + rank.fps)
    return float(np.sum(np.diff(recall) * precision))


def roc_curve(pairs: Collection[tuple[bool, float]]) -> Curve:
    """False positive rate (x) against true positive rate (y), from (0, 0) to (1, 1).

    >>> roc_curve([(True, 0.9), (False, 0.2), (True, 0.7), (False, 0.4)]).area
    1.0
    """
    rank = ranking(pairs)
    pos, neg = rank.positives, rank.negatives
    if pos == 0 or neg == 0:
        return Curve((), (), math.nan)
    x = np.r_[0.0, rank.fps / neg]
    y = np.r_[0.0, rank.tps / pos]
    return Curve(tuple(x.tolist()), tuple(y.tolist()), roc_auc(rank))


def pr_curve(pairs: Collection[tuple[bool, float]]) -> Curve:
    """Recall (x) against precision (y); `area` is average precision.

    >>> round(pr_curve([(True, 0.9), (False, 0.8), (True, 0.7), (False, 0.1)]).area, 4)
    0.8333
    """
    rank = ranking(pairs)
    pos = rank.positives
    if pos == 0:
        return Curve((), (), math.nan)
    x = np.r_[0.0, rank.tps / pos]
    y = np.r_[1.0, rank.tps / (rank.tps + rank.fps)]
    return Curve(tuple(x.tolist()), tuple(y.tolist()), average_precision(rank))


def log_loss(pairs: Collection[tuple[bool, float]], eps: float = 1e-15) -> float:
    """Mean binary cross-entropy, scores clipped to [eps, 1 - eps]; NaN when empty
    (`mean_log_loss` of the pairs' labels and scores)."""
    n = len(pairs)
    return mean_log_loss(np.fromiter((label for label, _ in pairs), np.bool_, n),
                         np.fromiter((score for _, score in pairs), np.float64, n), eps)


def mean_log_loss(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-15) -> float:
    """`log_loss` of arrays in one vectorised pass: the prequential window's, once a read.

    Scores are clamped to [eps, 1 - eps] as River's `LogLoss` clamps them, so it is the
    value River's rolling `LogLoss` over the same window gives, to rounding. The values of
    River's own example:

    >>> labels = np.array([True, False, False, True])
    >>> round(mean_log_loss(labels, np.array([0.9, 0.1, 0.2, 0.65])), 6)
    0.216162
    >>> mean_log_loss(labels[:0], np.array([]))
    nan
    """
    if len(scores) == 0:
        return math.nan
    p = np.clip(scores, eps, 1.0 - eps)
    return float(-np.log(np.where(labels, p, 1.0 - p)).mean())


def confusion_rates(
    pairs: Collection[tuple[bool, float]], threshold: float
) -> tuple[float, float, float]:
    """Precision, recall and F1 of "alert when score >= threshold"; NaN when undefined."""
    tp = fp = fn = 0
    for label, score in pairs:
        alert = score >= threshold
        tp += label and alert
        fp += (not label) and alert
        fn += label and not alert
    return rates(tp, fp, fn)


def rates(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; NaN where the denominator is zero."""
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return precision, recall, f1
