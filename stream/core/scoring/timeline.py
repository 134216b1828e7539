"""One champion model over every partition's labels, read as of event time.

Why: the model is otherwise kept per input partition, and partitions are keyed by card, so
with P partitions each model learns from 1/P of the labels. On the quality benchmark's stream
that cost 0.044 ROC AUC at 16 partitions; one model learning every label closes the gap
(docs/quality.md). Sharing a model across partitions and instances must not make scores
depend on timing, so it is learned the way the shared merchant table is folded
(features/merchant_table.py): each partition emits its labelled examples as table events
(kind ``LEARN``, effective time = the label's), every instance folds every partition's events
in the same canonical order, and a transaction reads the model as of its cutoff.

A model cannot be copied per event, so reads are as of *epochs*: a transaction whose cutoff
is ``c`` is scored by the model that learned exactly the examples with effective time before
``floor(c / epoch_s) * epoch_s``. The timeline keeps a frozen copy of the learner each time
the fold crosses an epoch boundary, for as long as a reader may still ask for it
(``release``). Labels arrive days after their transaction, so a 5-minute epoch (the default)
costs no measurable detection and copies the model 288 times a day of event time.

>>> from stream.core.scoring.model import ModelSpec, score_one
>>> timeline = ModelTimeline(ModelSpec(), ("amount_log",), epoch_s=100.0)
>>> timeline.learn(10.0, (1.0, 5.0))          # a fraud at eff 10, amount_log 5
>>> timeline.learn(150.0, (0.0, 1.0))         # a legitimate one at eff 150
>>> before, after = timeline.at(99.0), timeline.at(200.0)
>>> before[1], after[1]                       # examples learned (before eff 0 / eff 200)
(0, 2)
>>> score_one(before[0], {"amount_log": 5.0})  # the epoch before the first example
0.5
>>> timeline.at(120.0)[1]                     # eff 100-199: the fraud at 10 only
1
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

from river import compose

from stream.core.features.merchant_table import ImageMismatch
from stream.core.scoring.model import (
    FrozenScorer,
    ModelSpec,
    learn_values,
    make_model,
    score_one,
)

__all__ = ["ModelTimeline", "TimelineImage"]

_NEVER = math.inf


@dataclass(slots=True)
class TimelineImage:
    """The shared champion at one point of the table's fold (part of a ``TableImage``): the
    learner, its epoch copies still readable, and what a fold under other settings would
    differ in (``spec``, ``names``, ``epoch_s``: ``load`` refuses an image that differs)."""

    spec: ModelSpec
    names: tuple[str, ...]
    epoch_s: float
    learner: compose.Pipeline
    learned: int
    rejected: int
    next_start: float
    starts: list[float]
    copies: list[tuple[compose.Pipeline, int]]


class ModelTimeline:
    """The shared champion: a learner fed in fold order, and its copies at epoch boundaries.

    Parameters
    ----------
    spec
        The model (the champion's hyper-parameters).
    names
        The feature names, in the order a ``LEARN`` event carries their values.
    epoch_s
        Reads are exact as of multiples of this much event time.
    """

    def __init__(self, spec: ModelSpec, names: tuple[str, ...], epoch_s: float = 300.0,
                 start: tuple[compose.Pipeline, int] | None = None) -> None:
        if epoch_s <= 0:
            raise ValueError(f"epoch_s must be > 0, got {epoch_s}")
        self.spec = spec
        self.names = names
        self.epoch_s = float(epoch_s)
        # A trained model to start from (`--init-from`), and how many labels it learned.
        self._start = start
        self.learner: compose.Pipeline = make_model(spec)
        self.learned = 0
        if start is not None:
            self.learner, self.learned = copy.deepcopy(start[0]), start[1]
        self.rejected = 0  # examples of another width (untrusted feed input)
        self.too_old = 0  # reads before every copy kept (a release too early; never expected)
        # The next epoch boundary at or after every example learned so far.
        self._next = -_NEVER
        # (boundary, frozen learner, examples learned): the model of every read whose epoch
        # starts at or after `boundary` and before the next copy's boundary.
        self._starts: list[float] = []
        self._copies: list[tuple[compose.Pipeline, int]] = []
        # Scorers of the copies read (id of the copy -> its scorer, which holds it).
        self._scorers: dict[int, FrozenScorer] = {}

    def learn(self, eff: float, example: Sequence[float]) -> None:
        """Learn one example, ``(label, *features)``, in the table's fold order."""
        if len(example) != 1 + len(self.names):
            self.rejected += 1
            return
        if eff >= self._next:
            # Every example so far is before this epoch: freeze the learner for the reads of
            # the epochs from `_next` up to the one `eff` falls in.
            self._starts.append(self._next)
            self._copies.append((copy.deepcopy(self.learner), self.learned))
            self._next = math.floor(eff / self.epoch_s) * self.epoch_s + self.epoch_s
        learn_values(self.learner, self.names, example[1:], example[0] != 0.0, t=eff)
        self.learned += 1

    def at(self, cutoff: float) -> tuple[compose.Pipeline, int]:
        """The model (and how many examples it learned) for a read whose cutoff is ``cutoff``:
        the examples with effective time before the start of ``cutoff``'s epoch. Exact once
        the table's frontier has passed that start (the caller's merchant read, at the same
        cutoff, counts a read past the frontier as stale)."""
        start = math.floor(cutoff / self.epoch_s) * self.epoch_s
        if start >= self._next:
            return self.learner, self.learned
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:  # older than every copy kept (`release` promised no such read): the oldest
            self.too_old += 1
            i = 0
        return self._copies[i]

    def score(self, model: compose.Pipeline, features: dict[str, float]) -> float:
        """`score_one` of a model `at` gave: the learner as it stands, or an epoch copy
        through its `FrozenScorer` (kept while the copy may still be read).

        >>> timeline = ModelTimeline(ModelSpec(), ("amount_log",), epoch_s=100.0)
        >>> timeline.learn(10.0, (1.0, 5.0)); timeline.learn(150.0, (0.0, 1.0))
        >>> frozen, _ = timeline.at(120.0)
        >>> timeline.score(frozen, {"amount_log": 2.0}) == score_one(frozen, {"amount_log": 2.0})
        True
        """
        if model is self.learner:
            return score_one(model, features)
        scorer = self._scorers.get(id(model))  # a scorer holds its copy: no id is reused
        if scorer is None:
            if len(self._scorers) > len(self._copies) + 16:  # copies released since
                kept = {id(frozen) for frozen, _ in self._copies}
                self._scorers = {k: v for k, v in self._scorers.items() if k in kept}
            scorer = self._scorers[id(model)] = FrozenScorer(model)
        return scorer(features)

    def release(self, horizon: float) -> None:
        """No read will have a cutoff before ``horizon``: drop the copies only older epochs
        use (the one covering ``horizon``'s epoch stays)."""
        start = math.floor(horizon / self.epoch_s) * self.epoch_s if math.isfinite(horizon) \
            else horizon
        keep = bisect.bisect_right(self._starts, start) - 1
        if keep > 0:
            del self._starts[:keep]
            del self._copies[:keep]

    def reset(self) -> None:
        """Forget everything (the table is rebuilt from the merchant feed)."""
        self.learner = make_model(self.spec)
        self.learned = 0
        if self._start is not None:
            self.learner, self.learned = copy.deepcopy(self._start[0]), self._start[1]
        self._next = -_NEVER
        self._starts.clear()
        self._copies.clear()
        self._scorers.clear()

    @property
    def copies(self) -> int:
        return len(self._copies)

    def image(self) -> TimelineImage:
        """The timeline as it stands; the learner is copied (it goes on learning), the epoch
        copies are shared (frozen: only read).

        >>> timeline = ModelTimeline(ModelSpec(), ("amount_log",), epoch_s=100.0)
        >>> timeline.learn(10.0, (1.0, 5.0))
        >>> other = ModelTimeline(ModelSpec(), ("amount_log",), epoch_s=100.0)
        >>> other.load(timeline.image()); other.learn(150.0, (0.0, 1.0))
        >>> timeline.learn(150.0, (0.0, 1.0))
        >>> other.at(120.0)[1], other.learner["LogisticRegression"].weights == (
        ...     timeline.learner["LogisticRegression"].weights)
        (1, True)
        """
        return TimelineImage(self.spec, self.names, self.epoch_s,
                             copy.deepcopy(self.learner), self.learned, self.rejected,
                             self._next, list(self._starts), list(self._copies))

    def check(self, image: TimelineImage) -> None:
        """ImageMismatch when the image learned another model, other features or other
        epochs (a fold of the feed under this timeline's settings would differ); called
        before anything is replaced."""
        ours = (self.spec, self.names, self.epoch_s)
        theirs = (image.spec, tuple(image.names), image.epoch_s)
        if ours != theirs:
            raise ImageMismatch(f"the shared champion's image learned {theirs}, this scorer "
                                f"runs {ours}")
        if len(image.starts) != len(image.copies):
            raise ImageMismatch("the shared champion's image has a copy list that does not "
                                "match its epochs")

    def load(self, image: TimelineImage) -> None:
        """Continue from an image (`check`ed first)."""
        self.check(image)
        self.learner = copy.deepcopy(image.learner)
        self.learned, self.rejected = image.learned, image.rejected
        self._next = image.next_start
        self._starts = list(image.starts)
        self._copies = list(image.copies)
        self._scorers.clear()
