"""Champion versus challengers: would another model have done better on the same traffic?

Challengers score every transaction in shadow (same features, same moment) and learn from
the same labels, but never decide. This module only watches: per challenger it measures how
often its decision would have agreed with the champion's, how far its scores are from the
champion's, and each model's prequential metrics on the same labels; the deltas are
challenger minus champion. An optional rule says when a challenger has earned promotion and
returns it as a plain `Promotion`; the pipeline performs the swap and then calls `swap`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from stream.core.evaluation.prequential import Prequential, Summary
from stream.core.scoring.policy import Policy

Metric = Literal["roc_auc", "pr_auc", "log_loss"]
METRICS: tuple[Metric, ...] = ("roc_auc", "pr_auc", "log_loss")
_LOWER_IS_BETTER = frozenset({"log_loss"})


@dataclass(frozen=True, slots=True)
class PromotionRule:
    """Promote a challenger that beats the champion by `margin` on `metric`, judged only once
    both have at least `min_labels` labels since the last swap (so noise cannot flip roles)."""

    metric: Metric = "pr_auc"
    margin: float = 0.02
    min_labels: int = 5000

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"promotion metric must be one of {', '.join(METRICS)}")
        if self.margin < 0 or self.min_labels < 1:
            raise ValueError("promotion margin must be >= 0 and min_labels >= 1")

    def gain(self, champion: float, challenger: float) -> float:
        """How much better the challenger is (positive = better), whatever the metric's sense."""
        if self.metric in _LOWER_IS_BETTER:
            return champion - challenger
        return challenger - champion


@dataclass(frozen=True, slots=True)
class Promotion:
    """A decision to swap roles, with the evidence (for the log line and the metric)."""

    challenger: str
    champion: str
    metric: Metric
    champion_value: float
    challenger_value: float
    labels: int


@dataclass(frozen=True, slots=True)
class ChallengerSummary:
    """One challenger against the champion, over the last `window` decisions and labels."""

    name: str
    decisions: int
    agreement: float
    mean_abs_diff: float
    max_abs_diff: float
    metrics: Summary
    deltas: dict[str, float] = field(default_factory=dict)


class _Shadow:
    """Agreement and score distance of one challenger, over a window of decisions."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.recent: deque[tuple[bool, float]] = deque()
        self.agree = 0
        self.diff_sum = 0.0
        self.max_diff = 0.0
        self.decisions = 0

    def add(self, agree: bool, diff: float) -> None:
        if len(self.recent) == self.window:
            old_agree, old_diff = self.recent.popleft()
            self.agree -= old_agree
            self.diff_sum -= old_diff
        self.recent.append((agree, diff))
        self.agree += agree
        self.diff_sum += diff
        self.decisions += 1
        if diff > self.max_diff:
            self.max_diff = diff


class ChampionChallengers:
    """Shadow statistics for every challenger, and the promotion rule.

    >>> cc = ChampionChallengers("champ", ["chal"], Policy(0.2, 0.6), window=100,
    ...                          rule=PromotionRule("roc_auc", margin=0.1, min_labels=4))
    >>> for champ, chal, y in [(0.5, 0.9, True), (0.5, 0.1, False), (0.4, 0.8, True),
    ...                        (0.6, 0.2, False)]:
    ...     cc.update_decision(champ, {"chal": chal})
    ...     cc.update_label(y, champ, {"chal": chal})
    >>> cc.summary()["chal"].agreement, cc.promotion()
    (0.0, Promotion(challenger='chal', champion='champ', metric='roc_auc', champion_value=0.125, \
challenger_value=1.0, labels=4))
    """

    def __init__(
        self, champion: str, challengers: Sequence[str], policy: Policy, window: int = 10_000,
        rule: PromotionRule | None = None,
    ) -> None:
        if champion in challengers or len(set(challengers)) != len(challengers):
            raise ValueError("challenger names must be unique and differ from the champion's")
        self.policy = policy
        self.window = window
        self.rule = rule
        self.champion = champion
        self._evaluations = {name: self._prequential() for name in (champion, *challengers)}
        self._shadows = {name: _Shadow(window) for name in challengers}
        self._labels_since_swap = 0

    def _prequential(self) -> Prequential:
        return Prequential(self.window, self.policy.review_threshold,
                           self.policy.decline_threshold)

    @property
    def challengers(self) -> list[str]:
        return list(self._shadows)

    def update_decision(self, champion_score: float, scores: Mapping[str, float]) -> None:
        """One transaction scored by everyone; only the champion's score was acted on."""
        decide = self.policy.decide
        champion_decision = decide(champion_score)
        self._evaluations[self.champion].observe_decision(champion_score)
        for name, score in scores.items():
            self._shadows[name].add(decide(score) == champion_decision,
                                    abs(score - champion_score))
            self._evaluations[name].observe_decision(score)

    def update_label(
        self, y_true: bool, champion_score: float, scores: Mapping[str, float],
        decided_at: float | None = None, labelled_at: float | None = None,
    ) -> None:
        """A label, with every model's decision-time score for that transaction."""
        self._evaluations[self.champion].update(y_true, champion_score, decided_at, labelled_at)
        for name, score in scores.items():
            self._evaluations[name].update(y_true, score, decided_at, labelled_at)
        self._labels_since_swap += 1

    @property
    def labels_since_swap(self) -> int:
        return self._labels_since_swap

    def summary(self) -> dict[str, ChallengerSummary]:
        """Every challenger's comparison with the champion, as plain values."""
        champion = self._evaluations[self.champion].summary()
        out: dict[str, ChallengerSummary] = {}
        for name, shadow in self._shadows.items():
            mine = self._evaluations[name].summary()
            n = len(shadow.recent)
            out[name] = ChallengerSummary(
                name=name,
                decisions=shadow.decisions,
                agreement=shadow.agree / n if n else math.nan,
                mean_abs_diff=max(0.0, shadow.diff_sum) / n if n else math.nan,
                max_abs_diff=shadow.max_diff if n else math.nan,
                metrics=mine,
                deltas={m: getattr(mine, m) - getattr(champion, m) for m in METRICS},
            )
        return out

    def promotion(self) -> Promotion | None:
        """The challenger that has earned promotion under the rule, or None (a pure read)."""
        rule = self.rule
        if rule is None or self._labels_since_swap < rule.min_labels:
            return None
        champion_value = getattr(self._evaluations[self.champion].summary(), rule.metric)
        best: Promotion | None = None
        best_gain = 0.0
        for name in self._shadows:
            value = getattr(self._evaluations[name].summary(), rule.metric)
            gain = rule.gain(champion_value, value)
            # Strictly better (a twin never takes over) and past the margin; comparisons
            # with NaN are False, so an undefined metric is no evidence either way.
            if gain > best_gain and gain >= rule.margin:
                best_gain = gain
                best = Promotion(name, self.champion, rule.metric, champion_value, value,
                                 self._labels_since_swap)
        return best

    def swap(self, challenger: str) -> None:
        """Record that the pipeline made `challenger` the champion (and vice versa)."""
        if challenger not in self._shadows:
            raise KeyError(f"unknown challenger {challenger!r}")
        old = self.champion
        self._shadows = {(old if name == challenger else name): _Shadow(self.window)
                         for name in self._shadows}
        self.champion = challenger
        self._labels_since_swap = 0
