"""Has the world changed? Two complementary signals, both returned as plain DriftEvent values.

- The champion's loss (needs labels): River's ADWIN keeps an adaptive window of per-label
  log losses and cuts it when its two halves differ more than chance allows (Bifet &
  Gavaldà, 2007). It says "the model got worse (or better)", but only once labels arrive,
  which for chargebacks is days late.
- The score distribution (needs no labels): the population stability index of the last
  `window` scores against a reference window, on decile bins of the reference. It moves
  the moment traffic changes, before a single label is known. Rule of thumb from credit
  risk: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.

Neither acts on anything: the pipeline logs the event with the partition and event time,
and counts it in a metric; an operator (or an alert) decides.
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
    """ADWIN on the per-label log loss of decision-time scores.

    Losses are capped (`loss_cap`, ~ a score of 1e-4 for the true class) so one confident
    mistake cannot look like a regime change on its own.

    >>> import random
    >>> rng, detector = random.Random(1), LossDrift()
    >>> for i in range(4000):
    ...     y = rng.random() < 0.5
    ...     right = rng.random() < (0.95 if i < 2000 else 0.7)  # worse from i = 2000
    ...     detector.update(y, 0.8 if y == right else 0.2, at=float(i))
    ...     if detector.detected:
    ...         break
    >>> detector.detected.kind, detector.detected.direction, 2000 <= detector.detected.at < 2300
    ('loss', 'up', True)
    """

    def __init__(self, delta: float = 0.002, loss_cap: float = 10.0, partition: int = 0) -> None:
        self.delta = delta
        self.loss_cap = loss_cap
        self.partition = partition
        self._adwin = drift.ADWIN(delta=delta)
        self._seen = 0
        self.detected: DriftEvent | None = None

    def update(self, y_true: bool, score: float, at: float) -> None:
        """One labelled decision; `detected` says whether this update found a change."""
        p = min(max(score, 1e-15), 1.0 - 1e-15)
        loss = min(-math.log(p if y_true else 1.0 - p), self.loss_cap)
        before = self._adwin.estimation
        self._adwin.update(loss)
        self._seen += 1
        self.detected = None
        if self._adwin.drift_detected:
            self.detected = DriftEvent("loss", self.partition, at, self._adwin.estimation,
                                       before, self._seen)

    @property
    def mean_loss(self) -> float:
        """Mean loss over ADWIN's current (post-change) window."""
        return float(self._adwin.estimation) if self._seen else math.nan


class ScorePSI:
    """Population stability index of recent scores against a reference window.

    The first `warmup` scores are skipped (a cold model's scores say nothing about
    traffic), the next `reference_size` fix the reference and its decile edges, then the
    index is checked every `check_every` scores once `window` recent scores are held. A
    detection fires when the index crosses `threshold` upwards, and re-arms once it falls
    back below, so a lasting shift is reported once (the gauge keeps showing it).

    >>> import random
    >>> rng = random.Random(2)
    >>> psi = ScorePSI(reference_size=1000, window=1000, check_every=50)
    >>> for i in range(3000):
    ...     psi.update(rng.betavariate(2, 8), at=float(i))
    >>> psi.value < 0.1
    True
    >>> fired = []
    >>> for i in range(3000, 5000):
    ...     psi.update(rng.betavariate(4, 4), at=float(i))
    ...     fired += [psi.detected] if psi.detected else []
    >>> len(fired), fired[0].kind, fired[0].value > 0.25
    (1, 'psi', True)
    """

    def __init__(
        self, reference_size: int = 5000, window: int = 5000, bins: int = 10,
        threshold: float = 0.25, warmup: int = 0, check_every: int = 100, partition: int = 0,
    ) -> None:
        self.reference_size = reference_size
        self.window = window
        self.bins = bins
        self.threshold = threshold
        self.warmup = warmup
        self.check_every = check_every
        self.partition = partition
        self._seen = 0
        self._reference: list[float] = []
        self._edges: list[float] | None = None
        self._expected: list[float] = []
        self._recent: deque[int] = deque()
        self._counts: list[int] = []
        self._above = False
        self.detected: DriftEvent | None = None

    def update(self, score: float, at: float) -> None:
        """One decision's score; `detected` says whether this update crossed the threshold."""
        self._seen += 1
        self.detected = None
        if self._seen <= self.warmup:
            return
        if self._edges is None:
            self._reference.append(score)
            if len(self._reference) >= self.reference_size:
                self._fix_reference()
            return
        index = bisect_right(self._edges, score)
        recent = self._recent
        if len(recent) == self.window:
            self._counts[recent.popleft()] -= 1
        recent.append(index)
        self._counts[index] += 1
        if len(recent) == self.window and self._seen % self.check_every == 0:
            value = self.value
            if value > self.threshold and not self._above:
                self.detected = DriftEvent("psi", self.partition, at, value, self.threshold,
                                           self._seen)
            self._above = value > self.threshold

    def _fix_reference(self) -> None:
        ordered = sorted(self._reference)
        n = len(ordered)
        cuts = {ordered[min(n - 1, (n * i) // self.bins)] for i in range(1, self.bins)}
        self._edges = sorted(cuts)
        counts = [0] * (len(self._edges) + 1)
        for score in ordered:
            counts[bisect_right(self._edges, score)] += 1
        self._expected = [c / n for c in counts]
        self._counts = [0] * len(counts)
        self._reference = []

    def rebase(self) -> None:
        """Start a new reference from the next scores (after a deliberate model change)."""
        # Only bin indexes of recent scores are kept, so the new reference is built from the
        # next `reference_size` scores, with no further warm-up.
        self._edges = None
        self._reference = []
        self._recent.clear()
        self._counts = []
        self._above = False
        self.warmup = self._seen

    @property
    def ready(self) -> bool:
        return self._edges is not None and len(self._recent) == self.window

    @property
    def value(self) -> float:
        """The index now; NaN until the reference and a full recent window exist."""
        if not self.ready:
            return math.nan
        n = len(self._recent)
        total = 0.0
        for expected, count in zip(self._expected, self._counts, strict=True):
            e = max(expected, 1e-4)
            a = max(count / n, 1e-4)
            total += (a - e) * math.log(a / e)
        return total

