"""The only place that knows every layer: features -> scoring -> evaluation.

Pure Python, no I/O: the app loop hands in decoded messages and gets plain results back,
so the whole decision logic is unit-tested without a broker. Each input partition owns
its own feature state and model (the unit of parallelism and of state, as in Kafka
Streams), which is what lets a partition move between instances with its state.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from river import compose

from stream.data.messages import Decision, Label, Transaction
from stream.evaluation.prequential import Prequential, Snapshot
from stream.features.extractor import FeatureExtractor
from stream.scoring.model import ModelSpec, learn_one, make_model, score_one, top_contributions
from stream.scoring.pending import Decided, DueLabels, PendingBuffer
from stream.scoring.policy import Policy

LabelOutcome = Literal["learned", "held", "unmatched"]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Everything the core needs, as plain values (built from Settings by the CLI)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    policy: Policy = field(default_factory=Policy)
    horizons_s: tuple[float, ...] = (3600.0, 86400.0, 604800.0, 2592000.0)
    card_ttl_s: float = 30 * 86400.0
    merchant_ttl_s: float = 90 * 86400.0
    merchant_prior: tuple[float, float] = (1.0, 99.0)
    evict_every: int = 10_000
    label_delay_s: float = 0.0
    pending_ttl_s: float = 120 * 86400.0
    pending_max: int = 1_000_000
    metrics_window: int = 10_000
    explain_top_k: int = 3
    early_label_max: int = 100_000
    early_label_ttl_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class Scored:
    """The decision for one transaction, and how many labels were learned because of it."""

    score: float
    decision: Decision
    contributions: dict[str, float]
    learned: int


class PartitionState:
    """One input partition's features, model and label replay queue."""

    def __init__(self, partition: int, config: PipelineConfig) -> None:
        self.partition = partition
        self.features = FeatureExtractor(
            horizons_s=config.horizons_s,
            card_ttl_s=config.card_ttl_s,
            merchant_ttl_s=config.merchant_ttl_s,
            merchant_prior=config.merchant_prior,
            track_changes=False,  # nothing drains a changelog yet
        )
        self.model: compose.Pipeline = make_model(config.model)
        self.due = DueLabels(config.label_delay_s)
        self.clock = float("-inf")
        self.events = 0
        self.learned = 0


class Pipeline:
    """Score first, learn after, evaluate with the score production gave.

    A transaction's own label never influences its own score: features are read before the
    transaction is added to the card's state, the model scores, and only then learns.
    """

    def __init__(self, config: PipelineConfig, model_version: str | None = None) -> None:
        self.config = config
        self.model_version = model_version or config.model.name
        self.pending = PendingBuffer(config.pending_max, config.pending_ttl_s)
        self.evaluation = Prequential(config.metrics_window)
        self._partitions: dict[int, PartitionState] = {}
        # Labels that arrived before their transaction was scored (another partition's fetch
        # can overtake): held briefly and applied right after the transaction is scored.
        self._early: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self.clock = float("-inf")
        self.unmatched_labels = 0

    # -- partition ownership -------------------------------------------------------------
    def assign(self, partition: int) -> PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = PartitionState(partition, self.config)
        return state

    def revoke(self, partition: int) -> None:
        self._partitions.pop(partition, None)
        self.pending.drop_partition(partition)

    @property
    def partitions(self) -> dict[int, PartitionState]:
        return self._partitions

    # -- the hot path ----------------------------------------------------------------------
    def score(self, tx: Transaction, partition: int) -> Scored:
        """Decide on one transaction, then learn from whatever labels are now due."""
        state = self._partitions.get(partition) or self.assign(partition)
        features = state.features.extract(tx)
        score = score_one(state.model, features)
        decision = self.config.policy.decide(score)
        contributions = top_contributions(state.model, features, self.config.explain_top_k)
        learned = self._after_scoring(state, tx, features, score)
        return Scored(score, decision, contributions, learned)

    def _after_scoring(
        self, state: PartitionState, tx: Transaction, features: dict[str, float], score: float
    ) -> int:
        state.events += 1
        if tx.timestamp > state.clock:
            state.clock = tx.timestamp
            if tx.timestamp > self.clock:
                self.clock = tx.timestamp
        label, label_ts, immediate = tx.is_fraud, tx.timestamp, self.config.label_delay_s <= 0
        early = self._early.pop(tx.transaction_id, None) if self._early else None
        if early is not None:
            label, label_ts, immediate = early[0], early[1], True
        learned = 0
        if label is not None and immediate:
            self._learn(state, features, tx.merchant_id, score, label, label_ts)
            learned += 1
        else:
            names = state.features.feature_names
            packed = array("d", [features[name] for name in names])
            decided = Decided(state.partition, tx.merchant_id, tx.timestamp, score, packed)
            self.pending.put(tx.transaction_id, decided)
            if label is not None:
                state.due.push(tx.transaction_id, label, tx.timestamp)
        for tx_id, due_label in state.due.release(state.clock):
            if self._learn_pending(tx_id, due_label, state.clock):
                learned += 1
            else:
                self.unmatched_labels += 1  # its record was evicted before the label was due
        if state.events % self.config.evict_every == 0:
            state.features.evict(state.clock)
            self.pending.expire(state.clock)
            self._expire_early()
        return learned

    def _expire_early(self) -> None:
        horizon = self.clock - self.config.early_label_ttl_s
        early = self._early
        while early and next(iter(early.values()))[1] < horizon:
            early.popitem(last=False)
            self.unmatched_labels += 1

    def learn_label(self, label: Label) -> LabelOutcome:
        """A label from the labels topic: learn from the decision-time record if it is held;
        a label that overtook its transaction is held until that transaction is scored."""
        if self._learn_pending(label.transaction_id, label.is_fraud, label.timestamp):
            return "learned"
        self._early[label.transaction_id] = (label.is_fraud, label.timestamp)
        if len(self._early) > self.config.early_label_max:
            self._early.popitem(last=False)
            self.unmatched_labels += 1
        return "held"

    def _learn_pending(self, tx_id: str, is_fraud: bool, timestamp: float) -> bool:
        decided = self.pending.pop(tx_id)
        state = self._partitions.get(decided.partition) if decided else None
        if decided is None or state is None:
            return False
        names = state.features.feature_names
        features = dict(zip(names, decided.features, strict=True))
        self._learn(state, features, decided.merchant_id, decided.score, is_fraud, timestamp)
        return True

    def _learn(
        self,
        state: PartitionState,
        features: dict[str, float],
        merchant_id: str,
        score: float,
        is_fraud: bool,
        timestamp: float,
    ) -> None:
        learn_one(state.model, features, is_fraud)
        state.features.learn_label(merchant_id, is_fraud, timestamp)
        self.evaluation.update(is_fraud, score)
        state.learned += 1

    # -- read-only views for metrics and the summary ---------------------------------------
    def snapshot(self) -> Snapshot:
        return self.evaluation.snapshot()

    def state_sizes(self) -> dict[str, Any]:
        cards = sum(s.features.n_cards for s in self._partitions.values())
        merchants = sum(s.features.n_merchants for s in self._partitions.values())
        return {"cards": cards, "merchants": merchants, "pending_labels": len(self.pending),
                "early_labels": len(self._early)}
