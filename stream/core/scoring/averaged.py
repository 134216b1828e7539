"""River's logistic regression, scored with a moving average of its weights over label time.

Why: a constant-step SGD learner's weights keep jittering around the optimum, each fraud
label (1 in 100) kicking them, and the score of the next transaction carries that jitter.
Averaging the iterates (Polyak-Ruppert; an exponential average, so the model still follows
fraud that comes and goes) removes most of it without slowing what is learned. On the
quality benchmark's stream (docs/quality.md), a 3-day average took the test week's average
precision from 0.390 to 0.419 at one partition, 0.361 to 0.393 at four and 0.302 to 0.340 at
sixteen (per-partition models), ROC AUC within 0.002.

The average moves with *label time*, not with the number of labels, so its horizon is the
same at 1 or 16 partitions and at 100 or 100,000 events/s: each step moves it towards the
current weights by ``1 - exp(-dt / average_s)``, where ``dt`` is the label time since the
last step. For the first ``average_s`` of label time it simply follows the weights: early
iterates are far from any optimum, and an average of them would hold a new deployment's
scores near the untrained 0.5 for days. A step without a time (River's own ``learn_one`` API,
a one-off training) also makes the average the current weights, so the model then scores
like the plain regression and is never stale.

Learning is River's, untouched: the raw weights, intercept and optimiser state are what
``LogisticRegression.learn_one`` leaves, bit for bit; only scoring reads the average.

>>> from river import optim
>>> model = AveragedLogisticRegression(average_s=100.0, optimizer=optim.SGD(0.1))
>>> model.learn_one({"x": 1.0}, True, t=0.0)    # the first average_s: the weights themselves
>>> model.scoring_weights() == model.weights
True
>>> model.learn_one({"x": 1.0}, True, t=100.0)  # then one time constant: 63% of the way
>>> for _ in range(5):
...     model.learn_one({"x": 1.0}, True, t=100.0)  # no label time passes: the average waits
>>> round(model.weights["x"], 4), round(model.scoring_weights()["x"], 4)
(0.3225, 0.0807)
"""

from __future__ import annotations

from math import expm1
from typing import Any

from river import linear_model, optim, utils

__all__ = ["AveragedLogisticRegression"]

_OWN = frozenset({"average_s", "_average", "average_intercept", "started_at", "averaged_at"})


class AveragedLogisticRegression(linear_model.LogisticRegression):
    """A `LogisticRegression` whose predictions use an exponential average of its weights.

    Parameters
    ----------
    average_s
        The average's time constant, in seconds of label time (> 0).
    optimizer, loss, l2, l1, intercept_init, intercept_lr, clip_gradient, initializer
        River's `LogisticRegression` parameters (named, so River's `clone` and `repr` see
        them).
    """

    def __init__(self, average_s: float, optimizer: optim.base.Optimizer | None = None,
                 loss: optim.losses.BinaryLoss | None = None, l2: float = 0.0,
                 l1: float = 0.0, intercept_init: float = 0.0,
                 intercept_lr: float | optim.base.Scheduler = 0.01,
                 clip_gradient: float = 1e12,
                 initializer: optim.base.Initializer | None = None) -> None:
        if not average_s > 0:
            raise ValueError(f"average_s must be > 0, got {average_s}")
        super().__init__(optimizer=optimizer, loss=loss, l2=l2, l1=l1,
                         intercept_init=intercept_init, intercept_lr=intercept_lr,
                         clip_gradient=clip_gradient, initializer=initializer)
        self.average_s = float(average_s)
        self._average: utils.VectorDict = utils.VectorDict(None)
        self.average_intercept = 0.0
        self.started_at: float | None = None  # label time of the first step that had one
        self.averaged_at: float | None = None  # the latest label time stepped to

    @classmethod
    def from_plain(cls, regression: linear_model.LogisticRegression,
                   average_s: float) -> AveragedLogisticRegression:
        """A plain regression's learning (taken over, not copied), scored through an average
        from now on; the average starts as its weights, so the scores do not jump (a
        snapshot written before the average existed, restored by a scorer that has it)."""
        new = cls.__new__(cls)
        new.__dict__.update(vars(regression))
        new.average_s = float(average_s)
        new._average = utils.VectorDict(None)
        new.average_intercept = 0.0
        new.started_at = new.averaged_at = None
        new.follow(None)
        return new

    def to_plain(self) -> linear_model.LogisticRegression:
        """The same learning (taken over, not copied), scored with the raw weights."""
        plain = linear_model.LogisticRegression.__new__(linear_model.LogisticRegression)
        plain.__dict__.update({k: v for k, v in vars(self).items() if k not in _OWN})
        return plain

    def learn_one(self, x: dict[str, float], y: bool, w: float = 1.0,  # type: ignore[override]
                  t: float | None = None) -> None:
        """River's step on the raw weights, then the average's step to label time `t`."""
        super().learn_one(x, y, w)
        self.follow(t)

    def follow(self, t: float | None) -> None:
        """Move the average towards the current weights for the label time since the last
        step (all the way without a time, or in the first `average_s` of label time)."""
        if t is None:
            share = 1.0
        else:
            if self.started_at is None:
                self.started_at = t
            last = self.averaged_at
            if last is None or t - self.started_at < self.average_s:
                share = 1.0
            elif t > last:
                share = -expm1((last - t) / self.average_s)
            else:
                return  # no label time passed (or a label from before the last one)
            if last is None or t > last:
                self.averaged_at = t
        self._average.update_ema(self._weights, 1.0 - share)
        self.average_intercept += share * (self.intercept - self.average_intercept)

    def predict_proba_one(self, x: dict[str, float],  # type: ignore[override]
                          **kwargs: Any) -> dict[bool, float]:
        p = self.loss.mean_func(self._average.dot(x) + self.average_intercept)
        return {False: 1.0 - p, True: p}

    def scoring_weights(self) -> dict[str, float]:
        """The weights predictions use (explanations read these)."""
        return self._average.to_dict()
