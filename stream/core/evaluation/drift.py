"""Has the world changed? Two complementary alarms, both returned as plain DriftEvent values.

An alarm that always rings is ignored, so both are built to stay quiet on a stationary stream
whose fraud comes and goes in incidents, whose labels arrive days late and whose model keeps
learning (measured by `make quality`, see docs/quality.md "Drift alarms"):

- Fraud getting through (needs labels), `LossDrift`: River's ADWIN on the log loss of each
  fraud label's decision-time score. It asks "is the model missing fraud it used
  to catch?", the question a fraud team cares about, and only fraud labels answer it:
  legitimate labels outnumber them a hundred to one, so on the mean loss of every label a
  change in how much fraud there is, or the weekly rhythm of legitimate traffic, looks like a
  change in the model. One-sided: a model getting better is not an alarm.
- The decision mix moved (needs no labels), `ScorePSI`: the population stability index of
  the last `window` scores against the `reference_size` scores just before them, on bins at
  the policy's thresholds (approve / review / decline, the approve band split at halvings of
  the review threshold, where a shift shows first). It moves the moment traffic changes,
  days before a label is known. The reference rolls, so an online model that adapts, or a
  slow trend, is not a drift; the bins are where decisions change, so the model's constant
  re-calibration of scores far below any threshold is not one either.

Neither acts on anything: the pipeline logs the event (rate-limited, `alarms.py`) with the
partition and event time, and counts it in a metric; an operator (or an alert) decides.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Literal

from river import drift

DriftKind = Literal["loss", "psi"]


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """One detection: what moved, where, when (event time), from what to what."""

    kind: DriftKind
    partition: int
    at: float
    value: float
    reference: float
    observations: int

    @property
    def direction(self) -> Literal["up", "down"]:
        return "up" if self.value >= self.reference else "down"


class LossDrift:
    """ADWIN (River) on the capped log loss of each fraud label's decision-time score.

    ADWIN keeps an adaptive window of the fraud labels' losses (`-ln(score)`, capped at
    `loss_cap`, so one confident miss is not a regime on its own) and cuts it when its older
    and newer parts differ more than chance allows at confidence `delta` (Bifet & Gavalda,
    2007). A cut where the loss rose is a detection; a cut where it fell (the model caught up)
    only moves the window on. No test before `min_labels` fraud labels (ADWIN's grace period).
    Legitimate labels are counted but not tested (see the module docstring).

    The event's `value` is the mean loss of the last `min_labels` fraud labels, its
    `reference` the mean of the older part of the window that ADWIN dropped (the level before
    the change), `observations` the labels seen.

    >>> import random
    >>> rng, detector, fired = random.Random(1), LossDrift(partition=2), []
    >>> for i in range(40_000):  # 5% fraud; from i = 20,000 the model misses most of it
    ...     fraud = rng.random() < 0.05
    ...     caught = rng.random() < (0.8 if i < 20_000 else 0.2)
    ...     score = rng.uniform(0.2, 0.9) if caught else rng.uniform(0.001, 0.1)
    ...     detector.update(fraud, score, at=float(i))
    ...     fired += [detector.detected] if detector.detected else []
    >>> [(e.kind, e.direction, e.partition) for e in fired]  # once, and only after the change
    [('loss', 'up', 2)]
    >>> 20_000 < fired[0].at < 24_000, round(fired[0].reference, 1), round(fired[0].value, 1)
    (True, 1.2, 2.6)
    """

    def __init__(self, delta: float = 1e-4, min_labels: int = 30, loss_cap: float = 10.0,
                 partition: int = 0) -> None:
        self.delta = delta
        self.min_labels = min_labels
        self.loss_cap = loss_cap
        self.partition = partition
        self.labels = 0
        self.fraud_labels = 0
        self.detected: DriftEvent | None = None
        self._adwin = drift.ADWIN(delta=delta, clock=1, grace_period=min_labels)
        self._recent: deque[float] = deque(maxlen=min_labels)

    def update(self, y_true: bool, score: float, at: float) -> None:
        """One labelled decision; `detected` says whether this update found a rise."""
        self.labels += 1
        self.detected = None
        if not y_true:
            return
        self.fraud_labels += 1
        loss = min(-math.log(min(max(score, 1e-15), 1.0)), self.loss_cap)
        self._recent.append(loss)
        adwin = self._adwin
        width, total = adwin.width, adwin.total
        adwin.update(loss)
        dropped = width + 1 - adwin.width
        if not adwin.drift_detected or dropped < 1:
            return
        # ADWIN drops the older part of its window: a rise if that part was the lower, and
        # the latest losses are above it too.
        before = (total + loss - adwin.total) / dropped
        recent = sum(self._recent) / len(self._recent)
        if before < adwin.estimation and before < recent:
            self.detected = DriftEvent("loss", self.partition, at, recent, before, self.labels)

    @property
    def mean_loss(self) -> float:
        """Mean fraud-label loss over ADWIN's window (NaN before any fraud label)."""
        return float(self._adwin.estimation) if self._adwin.width else math.nan


def decision_edges(review: float, decline: float) -> tuple[float, ...]:
    """Bin edges for the score PSI: the policy's thresholds, and the approve band split at
    halvings of the review threshold.

    >>> decision_edges(0.2, 0.6)
    (0.025, 0.05, 0.1, 0.2, 0.6)
    """
    return tuple(sorted({review / 8, review / 4, review / 2, review, decline}))


class ScorePSI:
    """Population stability index of the last `window` scores against the `reference_size`
    scores just before them, on fixed bins (`edges`).

    The first `warmup` scores are skipped (a cold model's scores say nothing about traffic);
    once both windows are full the index is checked every `check_every` scores. A detection
    fires when it crosses `threshold` upwards and re-arms once it falls back below, so one
    shift is reported once: as the reference rolls forward into the new regime the index
    falls back by itself. Rule of thumb from credit risk: < 0.1 stable, 0.1-0.25 moderate
    shift, > 0.25 significant shift.

    >>> import random
    >>> rng = random.Random(2)
    >>> psi = ScorePSI(reference_size=1000, window=1000, check_every=50)
    >>> for i in range(3000):
    ...     psi.update(rng.betavariate(1, 30), at=float(i))
    >>> psi.value < 0.1
    True
    >>> fired = []
    >>> for i in range(3000, 6000):
    ...     psi.update(rng.betavariate(1, 8), at=float(i))  # the scores shift up at i = 3000
    ...     fired += [psi.detected] if psi.detected else []
    >>> len(fired), fired[0].kind, fired[0].value > 0.25, psi.value < 0.1  # reported once
    (1, 'psi', True, True)
    """

    def __init__(
        self, reference_size: int = 5000, window: int = 5000,
        edges: tuple[float, ...] = decision_edges(0.2, 0.6), threshold: float = 0.25,
        warmup: int = 0, check_every: int = 100, partition: int = 0,
    ) -> None:
        if reference_size < 1 or window < 1 or check_every < 1:
            raise ValueError("reference_size, window and check_every must be >= 1")
        self.reference_size = reference_size
        self.window = window
        self.edges = tuple(sorted(edges))
        self.threshold = threshold
        self.warmup = warmup
        self.check_every = check_every
        self.partition = partition
        self._seen = 0
        self._reference: deque[int] = deque()
        self._recent: deque[int] = deque()
        self._expected = [0] * (len(self.edges) + 1)
        self._actual = [0] * (len(self.edges) + 1)
        self._above = False
        self.detected: DriftEvent | None = None

    def update(self, score: float, at: float) -> None:
        """One decision's score; `detected` says whether this update crossed the threshold."""
        self._seen += 1
        self.detected = None
        if self._seen <= self.warmup:
            return
        index = bisect_right(self.edges, score)
        recent, reference = self._recent, self._reference
        recent.append(index)
        self._actual[index] += 1
        if len(recent) > self.window:
            moved = recent.popleft()
            self._actual[moved] -= 1
            reference.append(moved)
            self._expected[moved] += 1
            if len(reference) > self.reference_size:
                self._expected[reference.popleft()] -= 1
        if self.ready and self._seen % self.check_every == 0:
            value = self.value
            if value > self.threshold and not self._above:
                self.detected = DriftEvent("psi", self.partition, at, value, self.threshold,
                                           self._seen)
            self._above = value > self.threshold

    def rebase(self) -> None:
        """Forget both windows (after a deliberate model change): the index restarts from the
        next scores, with no further warm-up."""
        self._reference.clear()
        self._recent.clear()
        self._expected = [0] * len(self._expected)
        self._actual = [0] * len(self._actual)
        self._above = False
        self.warmup = self._seen

    @property
    def ready(self) -> bool:
        return (len(self._reference) == self.reference_size
                and len(self._recent) == self.window)

    @property
    def value(self) -> float:
        """The index now; NaN until both windows are full."""
        if not self.ready:
            return math.nan
        n_ref, n_recent = len(self._reference), len(self._recent)
        total = 0.0
        for expected, actual in zip(self._expected, self._actual, strict=True):
            e = max(expected / n_ref, 1e-4)
            a = max(actual / n_recent, 1e-4)
            total += (a - e) * math.log(a / e)
        return total
