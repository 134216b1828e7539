"""Incremental window statistics: exponentially decayed counts/sums and Welford moments.

Why exponential decay instead of sliding windows: a true 30-day sliding window must remember
every event of the last 30 days to know when each one falls out, so a busy card costs memory
in proportion to its traffic. An exponentially decayed window with time constant ``h`` keeps two
numbers (decayed count, decayed sum) plus the time they were last brought up to date:

    count_h(t) = sum_i exp(-(t - t_i) / h)        sum_h(t) = sum_i x_i * exp(-(t - t_i) / h)

and both are advanced in O(1) by multiplying with ``exp(-(t - t_last) / h)`` before adding the
new event. Memory is O(1) per horizon however busy the entity is; an event of age ``h`` weighs
``1/e``, so ``h`` plays the role of the window length.

Events that arrive slightly out of order (``t < t_last``) are treated as happening at
``t_last`` (``dt = max(0, t - t_last)``): decay factors never exceed 1, so counts never become
negative, infinite or NaN, at the cost of a tiny overestimate for late events.

These River-shaped estimators are the readable reference for the math. The feature extractor
packs the same arithmetic into one flat ``array('d')`` per card for memory (see
``extractor.py``); the unit tests check both against a batch recomputation.
"""

from __future__ import annotations

import math

__all__ = ["DecayedWindow", "RunningMoments"]


class DecayedWindow:
    """Exponentially decayed count, sum and mean over event time, O(1) state.

    Parameters
    ----------
    horizon_s
        Time constant in seconds: an event ``horizon_s`` old weighs ``1/e``.

    Examples
    --------
    >>> w = DecayedWindow(horizon_s=3600.0)
    >>> w.update(10.0, t=0.0)
    >>> w.update(30.0, t=0.0)
    >>> w.count(t=0.0), w.mean(t=0.0)
    (2.0, 20.0)
    >>> round(w.count(t=3600.0), 6)  # one time constant later: 2 / e
    0.735759
    >>> w.mean(t=3600.0)  # decay scales count and sum alike: the mean is unchanged
    20.0
    >>> DecayedWindow(60.0).mean(t=5.0)  # no history
    0.0
    """

    def __init__(self, horizon_s: float) -> None:
        if not horizon_s > 0.0 or not math.isfinite(horizon_s):
            raise ValueError(f"horizon_s must be a positive finite number, got {horizon_s!r}")
        self.horizon_s = horizon_s
        self._inv_h = 1.0 / horizon_s
        self._count = 0.0
        self._sum = 0.0
        self._t_last = -math.inf

    def _factor(self, t: float) -> float:
        dt = t - self._t_last
        if dt <= 0.0:  # out of order (or same instant): no decay, never growth
            return 1.0
        return math.exp(-dt * self._inv_h)

    def update(self, x: float, t: float) -> None:
        """Decay the state to ``t`` and add one event of value ``x``."""
        f = self._factor(t)  # exp(-inf) == 0.0 before the first event
        self._count = self._count * f + 1.0
        self._sum = self._sum * f + x
        if t > self._t_last:
            self._t_last = t

    def count(self, t: float) -> float:
        """Decayed number of events as seen at time ``t`` (no side effects)."""
        return self._count * self._factor(t) if self._count else 0.0

    def total(self, t: float) -> float:
        """Decayed sum of values as seen at time ``t`` (no side effects)."""
        return self._sum * self._factor(t) if self._sum else 0.0

    def mean(self, t: float) -> float:
        """Decay-weighted mean at ``t``; 0.0 when there is no history.

        Decay scales count and sum by the same factor, so the mean is the ratio of the stored
        (undecayed) numbers: exact, and free of underflow after a long idle time.
        """
        return self._sum / self._count if self._count > 0.0 else 0.0


class RunningMoments:
    """Running count, mean and sample variance over all history (Welford's algorithm).

    Welford's update is numerically stable (no catastrophic cancellation of
    ``E[x^2] - E[x]^2``) and needs three numbers however long the history is.

    Examples
    --------
    >>> m = RunningMoments()
    >>> for x in (2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0):
    ...     m.update(x)
    >>> m.n, m.mean, round(m.var, 6)
    (8, 5.0, 4.571429)
    >>> round(m.zscore(9.0), 6)
    1.870829
    >>> RunningMoments().zscore(3.0)  # fewer than 2 observations: no spread to compare against
    0.0
    """

    def __init__(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, x: float) -> None:
        """Add one observation."""
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def var(self) -> float:
        """Sample variance (ddof=1); 0.0 with fewer than two observations."""
        return self._m2 / (self._n - 1) if self._n > 1 else 0.0

    def zscore(self, x: float) -> float:
        """How many sample standard deviations ``x`` lies from the running mean.

        0.0 with fewer than two observations, and 0.0 when the history has no spread.
        """
        var = self.var
        return (x - self._mean) / math.sqrt(var) if var > 0.0 else 0.0
