"""Prequential (test-then-train) evaluation from decision-time scores.

Each update pairs the score production gave with the label when it arrives, so these
numbers are what the business experienced, not a flattering re-score by a later model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import metrics, utils


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Plain values for metrics and the terminal summary; NaN until there is enough data."""

    labels: int
    positives: int
    roc_auc: float
    log_loss: float


class Prequential:
    """Rolling ROC AUC and log loss over the last `window` labelled decisions.

    >>> ev = Prequential(window=100)
    >>> for score, y in [(0.9, True), (0.2, False), (0.7, True), (0.4, False)]:
    ...     ev.update(y, score)
    >>> ev.snapshot().roc_auc
    1.0
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self._auc = metrics.RollingROCAUC(window_size=window)
        self._log_loss = utils.Rolling(metrics.LogLoss, window_size=window)
        self._labels = 0
        self._positives = 0

    def update(self, y_true: bool, score: float) -> None:
        self._auc.update(y_true, score)
        self._log_loss.update(y_true, score)
        self._labels += 1
        self._positives += int(y_true)

    def snapshot(self) -> Snapshot:
        has_both = 0 < self._positives < self._labels
        auc = float(self._auc.get()) if has_both else math.nan
        loss = float(self._log_loss.get()) if self._labels else math.nan  # type: ignore[operator]
        return Snapshot(self._labels, self._positives, auc, loss)
