"""The evaluation layer as the pipeline uses it: one object that watches every decision and
every label and returns what should be done (a promotion, a drift to log) as plain values.

Kept out of pipeline.py so the hot path there stays readable: the pipeline calls
`decided(...)` once per transaction and `labelled(...)` once per label, and acts on what
comes back. Evaluation state is pipeline-wide (the dashboard's numbers cover every assigned
partition), except drift, which is watched per partition because each partition has its
own model and traffic.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass

from stream.core.evaluation.alarms import DriftAlarms
from stream.core.evaluation.drift import DriftEvent, LossDrift, ScorePSI, decision_edges
from stream.core.evaluation.prequential import Prequential, Summary
from stream.core.evaluation.shadow import (
    ChallengerSummary,
    ChampionChallengers,
    Promotion,
    PromotionRule,
)
from stream.core.scoring.policy import Policy

MAX_DELAYS = 100_000


@dataclass(frozen=True, slots=True)
class OversightConfig:
    """Challengers, promotion, drift and the "no chargeback within N days" rule."""

    challengers: tuple[str, ...] = ()
    promotion: PromotionRule | None = None
    promotion_check_every: int = 500
    # Fraud getting through: ADWIN (confidence drift_delta) on each fraud label's log loss,
    # tested from drift_min_labels fraud labels on (drift.LossDrift).
    drift_delta: float = 1e-4
    drift_min_labels: int = 30
    # At most one log line per kind and partition per this much event time (alarms.py).
    drift_log_interval_s: float = 3600.0
    # The decision mix: PSI of the last window vs the reference just before it, on bins at
    # `psi_edges` (None: the policy's thresholds, see drift.decision_edges).
    psi_reference: int = 5000
    psi_window: int = 5000
    psi_edges: tuple[float, ...] | None = None
    psi_threshold: float = 0.25
    psi_warmup: int = 2000
    # None: an unlabelled transaction is never assumed legitimate (the default).
    unlabelled_as_legit_s: float | None = None


class Oversight:
    """Prequential metrics, champion-vs-challengers and drift, fed by the pipeline.

    >>> o = Oversight(OversightConfig(), "champ", Policy(), window=100)
    >>> o.decided(0, at=0.0, score=0.7, challengers={})
    >>> o.labelled(0, True, 0.7, None, decided_at=0.0, labelled_at=3600.0)
    (None, None)
    >>> o.summary().labels, o.drain_label_delays()
    (1, [3600.0])
    """

    def __init__(self, config: OversightConfig, champion: str, policy: Policy,
                 window: int = 10_000) -> None:
        self.config = config
        self.policy = policy
        self.window = window
        self.evaluation = Prequential(window, policy.review_threshold, policy.decline_threshold)
        self.comparison = (ChampionChallengers(champion, list(config.challengers), policy,
                                               window, config.promotion)
                           if config.challengers else None)
        self._loss: dict[int, LossDrift] = {}
        self._psi: dict[int, ScorePSI] = {}
        self._edges = (config.psi_edges if config.psi_edges is not None
                       else decision_edges(policy.review_threshold, policy.decline_threshold))
        # Every detection is counted (the metric); the log lines are rate-limited.
        self.drift_counts: Counter[tuple[str, str]] = Counter()
        self.recent_drift: deque[DriftEvent] = deque(maxlen=100)
        self.alarms = DriftAlarms(config.drift_log_interval_s)
        self.promotions: list[Promotion] = []
        self.assumed_legit = 0
        self._delays: list[float] = []

    @property
    def champion(self) -> str | None:
        return self.comparison.champion if self.comparison is not None else None

    # -- feeding -----------------------------------------------------------------------------
    def decided(self, partition: int, at: float, score: float,
                challengers: Mapping[str, float]) -> DriftEvent | None:
        """One decision by the champion (and the challengers' shadow scores)."""
        self.evaluation.observe_decision(score)
        if self.comparison is not None:
            self.comparison.update_decision(score, challengers)
        psi = self._psi.get(partition)
        if psi is None:
            c = self.config
            psi = self._psi[partition] = ScorePSI(c.psi_reference, c.psi_window, self._edges,
                                                  c.psi_threshold, c.psi_warmup,
                                                  partition=partition)
        psi.update(score, at)
        return self._drifted(psi.detected)

    def labelled(
        self, partition: int, y: bool, score: float, challengers: Mapping[str, float] | None,
        decided_at: float, labelled_at: float, assumed: bool = False,
    ) -> tuple[DriftEvent | None, Promotion | None]:
        """One label for a decision; returns a drift to log and a promotion to perform."""
        self.evaluation.update(y, score, decided_at, labelled_at)
        if assumed:
            self.assumed_legit += 1
        elif len(self._delays) < MAX_DELAYS:
            self._delays.append(max(0.0, labelled_at - decided_at))
        loss = self._loss.get(partition)
        if loss is None:
            c = self.config
            loss = self._loss[partition] = LossDrift(c.drift_delta, c.drift_min_labels,
                                                     partition=partition)
        loss.update(y, score, labelled_at)
        promotion = None
        comparison = self.comparison
        if comparison is not None and challengers is not None:
            comparison.update_label(y, score, challengers, decided_at, labelled_at)
            every = self.config.promotion_check_every
            if comparison.rule is not None and comparison.labels_since_swap % every == 0:
                promotion = comparison.promotion()
        return self._drifted(loss.detected), promotion

    def _drifted(self, event: DriftEvent | None) -> DriftEvent | None:
        if event is not None:
            self.drift_counts[(event.kind, event.direction)] += 1
            self.recent_drift.append(event)
        return event

    def promoted(self, promotion: Promotion) -> None:
        """The pipeline swapped the models: swap the roles and re-learn what normal looks like."""
        if self.comparison is not None:
            self.comparison.swap(promotion.challenger)
        self.promotions.append(promotion)
        for psi in self._psi.values():
            psi.rebase()

    def forget(self, partition: int) -> None:
        """A revoked partition's drift detectors go with it."""
        self._loss.pop(partition, None)
        self._psi.pop(partition, None)
        self.alarms.forget(partition)

    # -- reading -----------------------------------------------------------------------------
    def summary(self) -> Summary:
        return self.evaluation.summary()

    def challengers(self) -> dict[str, ChallengerSummary]:
        return self.comparison.summary() if self.comparison is not None else {}

    def psi(self) -> dict[int, float]:
        """The score PSI per partition (NaN while a reference is being built)."""
        return {p: psi.value for p, psi in self._psi.items()}

    def mean_loss(self) -> dict[int, float]:
        return {p: loss.mean_loss for p, loss in self._loss.items()}

    def drain_label_delays(self) -> list[float]:
        """Label delays observed since the last drain (for a Prometheus histogram)."""
        out, self._delays = self._delays, []
        return out
