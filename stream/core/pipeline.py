"""The only place that knows every layer: features -> scoring -> evaluation.

Pure Python, no I/O: the app loop hands in decoded messages and gets plain results back,
so the whole decision logic is unit-tested without a broker. Each input partition owns
its own feature state and model (the unit of parallelism and of state, as in Kafka
Streams), which is what lets a partition move between instances with its state (that state
and its snapshots are in partitions.py).

About 400 lines on purpose: scoring, the label joins (in-event, delayed, early, from
the labels topic, assumed legitimate) and learning share the decision-time records and the
change tracking, and split apart each half would reach into the other's.
"""

from __future__ import annotations

import copy
import logging
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast

from stream.contracts.messages import Decision, Label, ModelState, Transaction
from stream.core.budget import EARLY_LABEL_ENTRY_BYTES, ByteBudget
from stream.core.evaluation.drift import DriftEvent
from stream.core.evaluation.oversight import Oversight
from stream.core.evaluation.prequential import Summary
from stream.core.evaluation.shadow import Promotion
from stream.core.features.extractor import FeatureExtractor
from stream.core.features.merchant_table import (
    ImageMismatch,
    MerchantTable,
    TableImage,
    TableView,
)
from stream.core.partitions import (
    Learned,
    PartitionState,
    Recent,
    apply_restored,
    champion_of,
    changes_of,
    load_snapshot,
    snapshot_of,
)
from stream.core.pipeline_config import PipelineConfig
from stream.core.scoring.model import (
    in_form_of,
    learn_one,
    make_model,
    score_one,
    top_contributions,
)
from stream.core.scoring.pending import Decided, PendingBuffer
from stream.core.scoring.timeline import ModelTimeline
from stream.state.changelog import (
    PartitionChanges,
    PendingRow,
    Quarantined,
    RestoredState,
    encode_vector,
)
from stream.state.snapshot import PartitionSnapshot, signed_with_previous

NO_CONTRIBUTIONS: dict[str, float] = {}
# Events of a partition between two evictions of idle cards and merchants and two releases
# of the merchant table's old copies: often enough that each drops a few (once every
# `evict_every`, 10,000, a release dropped every copy since at once, a 50-80 ms stall),
# rarely enough that its min over the partitions' stream times costs nothing.
TIDY_EVERY = 100
# "corrected": the opposite of a label already learned, learned again; "repeated": the same.
LabelOutcome = Literal["learned", "held", "unmatched", "corrected", "repeated"]
log = logging.getLogger("stream.core.pipeline")
# Shared, read-only: the hot path allocates nothing for challengers when there are none.
NO_SCORES: Mapping[str, float] = MappingProxyType({})


class Scored(NamedTuple):
    """The decision for one transaction, and how many labels were learned because of it.

    A named tuple, immutable as the frozen dataclass it was: made once per event, and a
    frozen dataclass sets each of its eight fields through `object.__setattr__` (1.35 us a
    construction against 0.38).

    >>> Scored(0.7, "decline", {}, 1).model_state, Scored(0.7, "decline", {}, 1).challengers
    ('ready', mappingproxy({}))
    """

    score: float
    decision: Decision
    contributions: dict[str, float]
    learned: int
    # The challengers' shadow scores (empty, and shared, when there are none).
    challengers: Mapping[str, float] = NO_SCORES
    # The features the decision was made on (read them, never change them): batch tools and
    # the quality benchmark train other models on exactly what the online model saw.
    features: Mapping[str, float] = NO_SCORES
    # "warming": the decision followed the cold-start fallback, not the score (warmup.py).
    model_state: ModelState = "ready"
    # True: the transaction id was seen recently; this is the first decision again, and
    # nothing was scored, learned or counted in the card's state.
    duplicate: bool = False


class Pipeline:
    """Score first, learn after, evaluate with the score production gave.

    A transaction's own label never influences its own score: features are read before the
    transaction is added to the card's state, the model scores, and only then learns.
    """

    def __init__(
        self, config: PipelineConfig, model_version: str | None = None,
        init_from: PartitionSnapshot | None = None, merchant_partitions: int | None = None,
        merchant_feed: bool = False,
    ) -> None:
        self.config = config
        # One merchant table over all `merchant_partitions` input partitions (see
        # features/merchant_table.py); None keeps merchant state per partition.
        self.merchants: MerchantTable | None = None
        if merchant_partitions is not None:
            self.merchants = MerchantTable(merchant_partitions, config.merchant_prior,
                                           config.merchant_delta_s, config.merchant_ttl_s)
        self._views: dict[int, TableView] = {}
        # Several instances share the table through the merchant feed (serving/merchant_feed.py):
        # each partition's view keeps what it emitted until `drain_feed` publishes it.
        self._feed = merchant_feed
        # A trained snapshot (`stream train`) that every newly assigned partition starts from.
        self.init_from = init_from
        self.model_version = model_version or config.model.name
        # One champion over every partition's labels (scoring/timeline.py), or None: each
        # partition's own.
        self.timeline = self._timeline(config)
        # Which legitimate labels the per-partition models learn (scoring/sampling.py).
        self.sampling = config.sampling
        self.pending = PendingBuffer(config.pending_max, config.pending_ttl_s,
                                     config.pending_max_bytes)
        # One byte budget for the card state of every partition this instance holds.
        self.card_budget = ByteBudget(config.card_state_max_bytes)
        self.oversight = Oversight(config.oversight, self.model_version, config.policy,
                                   config.metrics_window)
        self.evaluation = self.oversight.evaluation
        # Every model's name in a fixed order: pending records keep all decision-time scores
        # in this order (`Decided.shadow`), whatever the roles are when the label arrives.
        self._names: tuple[str, ...] = (self.model_version, *config.oversight.challengers)
        self._partitions: dict[int, PartitionState] = {}
        # Labels that arrived before their transaction was scored (another partition's fetch
        # can overtake): held briefly and applied right after the transaction is scored.
        self._early: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self.early_budget = ByteBudget(config.early_label_max_bytes)
        self.clock = float("-inf")
        self.unmatched_labels = 0
        # Partitions touched since their last checkpoint, and their pending-record changes.
        self.dirty: set[int] = set()
        self._pending_changes: dict[int, dict[str, PendingRow | None]] = {}
        self._tombstones: dict[int, list[bytes]] = {}  # forget_rows

    def _timeline(self, config: PipelineConfig) -> ModelTimeline | None:
        if config.model_state != "shared":
            return None
        if self.merchants is None:
            raise ValueError("model_state 'shared' learns through the shared merchant table: "
                             "it needs merchant_state 'shared'")
        if config.oversight.promotion is not None:
            raise ValueError("promotion swaps a partition's champion: not with "
                             "model_state 'shared'")
        names = FeatureExtractor(horizons_s=config.horizons_s).feature_names
        start = None
        if self.init_from is not None:
            start = (in_form_of(champion_of(self.init_from, self.model_version),
                                make_model(config.model)), self.init_from.learned)
        timeline = ModelTimeline(config.model, names, config.model_epoch_s, start)
        self.merchants.timeline = timeline
        return timeline

    def _champion(self, state: PartitionState, t: float) -> tuple[Any, int]:
        """The model that decides a transaction at `t`, and how many labels it learned: the
        partition's, or the shared one as of the transaction's merchant cutoff."""
        timeline = self.timeline
        if timeline is None:
            return state.model, state.learned
        view = cast(TableView, state.merchants)
        return timeline.at(view.effective(t) - view.table.delta_s)

    # -- partition ownership -------------------------------------------------------------
    def assign(self, partition: int) -> PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = self._new_state(partition)
            if self.init_from is not None:
                load_snapshot(state, self.init_from, self.model_version, None)
                self._advance_clock(state)
        return state

    def _new_state(self, partition: int) -> PartitionState:
        view = self._view(partition) if self.merchants is not None else None
        state = PartitionState(partition, self.config, view, self.card_budget)
        if self._feed and self.merchants is not None:
            self.merchants.set_local({*self._partitions, partition})
        return state

    def _view(self, partition: int) -> TableView:
        view = self._views.get(partition)
        if view is None:
            assert self.merchants is not None
            view = self._views[partition] = TableView(
                self.merchants, partition, self.config.merchant_lateness_s, self._feed)
        return view

    def lookahead(self, partition: int, head: float) -> None:
        """The earliest event time still queued for ``partition`` (``inf``: none, ever): lets
        the shared merchant table fold the other partitions' events without waiting for this
        one's next event. A no-op when merchant state is per partition."""
        if self.merchants is not None:
            if partition not in self._partitions:
                self.assign(partition)
            self._views[partition].lookahead(head)

    # -- the merchant feed (several instances, one table) ----------------------------------
    def drain_feed(self, partition: int) -> tuple[int, list[Any], float, float] | None:
        """An owned partition's merchant events since the last drain, with its watermark and
        stream time, for the feed (None: nothing new). See TableView.drain."""
        view = self._views.get(partition)
        return view.drain() if view is not None else None

    def apply_feed(self, partition: int, first_seq: int, events: list[Any], mark: float,
                   stream_time: float) -> int:
        """Fold a feed record of `partition` (events already seen are skipped)."""
        return self._view(partition).apply(first_seq, events, mark, stream_time)

    def idle(self, partition: int) -> None:
        """An owned partition with no input waiting: its watermark follows the latest event
        time known to this instance (its own partitions' and the feed's)."""
        if self.merchants is not None and partition in self._partitions:
            now = max(v.stream_time for v in self._views.values())
            self._views[partition].idle(now)

    def feed_news(self) -> bool:
        """An owned partition has merchant events or a watermark not yet published."""
        views = self._views
        for p in self._partitions:
            view = views.get(p)
            if view is not None and (view.outbox or view.mark > view.published):
                return True
        return False

    def release_merchant_copies(self) -> None:
        """During a rebuild from the feed: drop the table's state copies that no partition can
        read any more. Each partition's stream time there is at most the one its changelog
        restores (both are written in one transaction), so its reads' cutoffs are never
        before it, less the lateness and delta; partitions that never processed anything
        do not bound it."""
        table = self.merchants
        if table is None:
            return
        times = [v.stream_time - v.lateness_s for v in self._views.values()
                 if v.stream_time > float("-inf")]
        if len(times) == table.partitions:
            table.release(min(times) - table.delta_s)

    def reset_merchants(self) -> None:
        """Empty the merchant table and forget every partition's feed position: the caller
        rebuilds it from the feed, then restores the owned partitions."""
        if self.merchants is not None:
            self.merchants.reset()
            for view in self._views.values():
                view.restore(0, float("-inf"))

    def export_merchants(self) -> TableImage:
        """The shared table (and champion) with every partition's place in it, for a rebuild
        that loads it instead of folding the whole feed (`load_merchants`). Taken when the
        owned partitions' news is published (a checkpoint's feed records), so what it holds
        of them is what the feed holds: ValueError otherwise.

        Exact for any partition restored from a checkpoint at or after it: copies for reads
        behind the frontier are kept back to the slowest partition's reads, every
        partition's (`_tidy_merchants`)."""
        table = self.merchants
        if table is None:
            raise ValueError("no shared merchant table to export (merchant_state 'partition')")
        if self.feed_news():
            raise ValueError("an owned partition has merchant events not yet published: "
                             "export after the checkpoint's feed records")
        image = table.image()
        image.views = {p: (v.seq, v.stream_time) for p, v in self._views.items()}
        image.lateness_s = self.config.merchant_lateness_s
        return image

    def load_merchants(self, image: TableImage) -> None:
        """Start the shared table from an image (`export_merchants`), as a rebuild that folded
        the feed up to it would; the owned partitions are then restored from their changelog
        as after any rebuild. ImageMismatch (nothing changed) when it was folded under other
        settings; the caller then folds the whole feed."""
        table = self.merchants
        if table is None:
            raise ImageMismatch("this scorer keeps merchant state per partition")
        lateness = self.config.merchant_lateness_s
        if image.lateness_s != lateness:
            raise ImageMismatch(f"the merchant table image was taken with merchant_lateness_s "
                                f"{image.lateness_s}, this scorer runs {lateness}")
        if any(not 0 <= p < table.partitions for p in image.views):
            raise ImageMismatch("the merchant table image names a partition this table "
                                f"does not have ({table.partitions} partitions)")
        table.load(image)
        for view in self._views.values():
            view.restore(0, float("-inf"))
        for p, (seq, stream_time) in image.views.items():
            self._view(p).resume(seq, stream_time)

    def merchant_lag(self) -> float:
        """Seconds of event time by which the owned partitions' latest reads run ahead of the
        merchant table's frontier (0: every read is exact)."""
        table = self.merchants
        views = [self._views[p] for p in self._partitions if p in self._views]
        if table is None or not views:
            return 0.0
        latest = max(v.stream_time for v in views) - table.delta_s
        lag = latest - table.frontier
        return lag if 0.0 < lag < float("inf") else 0.0

    @property
    def merchant_frontier(self) -> float:
        """The event time up to which every partition's merchant events are folded."""
        return self.merchants.frontier if self.merchants is not None else float("inf")

    def export_partition(self, partition: int, with_features: bool = True) -> PartitionSnapshot:
        """Everything the partition has learned, as a snapshot (see state/snapshot.py); with
        a shared champion, its current model and label count (a trained snapshot for
        `--init-from`)."""
        snapshot = snapshot_of(self._partitions[partition], self.pending, self.model_version,
                               with_features)
        if self.timeline is not None:
            snapshot.model = copy.deepcopy(self.timeline.learner)
            snapshot.learned = self.timeline.learned
        return snapshot

    def restore_partition(self, snapshot: PartitionSnapshot, partition: int | None = None) -> None:
        """Replace a partition's state with a snapshot's (on assignment, after a restart)."""
        target = snapshot.partition if partition is None else partition
        self.revoke(target)
        state = self._partitions[target] = self._new_state(target)
        load_snapshot(state, snapshot, self.model_version, self.pending)
        self._advance_clock(state)

    def limit_clock(self, partition: int, latest: float) -> bool:
        """Bring a restored partition's clock back to `latest` (the caller's wall clock plus
        the allowed skew: the core reads no clock). State written before event times were
        bounded can hold a clock in year 9999, which would keep eviction and TTLs there.
        True when the clock was moved."""
        state = self._partitions.get(partition)
        if state is None or state.clock <= latest:
            return False
        state.clock = latest
        self.clock = min(self.clock, latest)
        self.dirty.add(partition)
        return True

    def _advance_clock(self, state: PartitionState) -> None:
        if state.clock > self.clock:
            self.clock = state.clock

    def revoke(self, partition: int) -> None:
        state = self._partitions.pop(partition, None)
        if state is not None:
            state.features.card_store.clear()  # gives its bytes back to the card budget
            if self._feed and self.merchants is not None:
                self.merchants.set_local(set(self._partitions))
        self.oversight.forget(partition)
        self.pending.drop_partition(partition)
        self.dirty.discard(partition)
        self._pending_changes.pop(partition, None)
        self._tombstones.pop(partition, None)

    @property
    def partitions(self) -> dict[int, PartitionState]:
        return self._partitions

    # -- the hot path ----------------------------------------------------------------------
    def score(self, tx: Transaction, partition: int) -> Scored:
        """Decide on one transaction, then learn from whatever labels are now due.

        A transaction id the partition decided on recently is a duplicate (a producer's
        retry, an upstream replay): it gets the first decision again, with no features, no
        learning and no change to the card's windows (see `_duplicate`)."""
        state = self._partitions.get(partition) or self.assign(partition)
        recent = state.recent
        if recent.enabled:
            seen = recent.get(tx.transaction_id)
            if seen is not None:
                return self._duplicate(state, seen)
        features = state.features.extract(tx, state.clock)
        model, learned_by_model = self._champion(state, tx.timestamp)
        timeline = self.timeline
        score = score_one(model, features) if timeline is None else timeline.score(model, features)
        decision, model_state = self.config.warmup.decide(
            self.config.policy, score, tx.amount, learned_by_model)
        if state.challengers:
            shadow: Mapping[str, float] = {
                name: score_one(model, features) for name, model in state.challengers.items()}
        else:
            shadow = NO_SCORES
        drift = self.oversight.decided(partition, tx.timestamp, score, shadow)
        if drift is not None:
            _log_drift(self.oversight, drift)
        # Explanations are for the analyst who reviews or declines; approvals (~95% of
        # traffic) skip them, which saves a fifth of the per-event cost.
        contributions = (
            top_contributions(model, features, self.config.explain_top_k)
            if decision != "approve" else NO_CONTRIBUTIONS
        )
        learned = self._after_scoring(state, tx, features, score, shadow)
        if recent.enabled:
            recent.put(tx.transaction_id, state.events, tx.timestamp,
                       (score, decision, model_state))
        return Scored(score, decision, contributions, learned, shadow, features, model_state)

    def _duplicate(self, state: PartitionState, seen: Recent) -> Scored:
        """The first decision again. Only the partition's event count moves (it counts input
        records, and a restore compares it with the offsets); the memory keeps the id where
        it was, so a stream of duplicates cannot keep an id alive past its window."""
        state.events += 1
        self.dirty.add(state.partition)
        score, decision, model_state = seen
        return Scored(score, decision, NO_CONTRIBUTIONS, 0, model_state=model_state,
                      duplicate=True)

    def _after_scoring(
        self, state: PartitionState, tx: Transaction, features: dict[str, float], score: float,
        shadow: Mapping[str, float] = NO_SCORES,
    ) -> int:
        state.events += 1
        self.dirty.add(state.partition)
        if tx.timestamp > state.clock:
            state.clock = tx.timestamp
            if tx.timestamp > self.clock:
                self.clock = tx.timestamp
        label, label_ts, immediate = tx.is_fraud, tx.timestamp, self.config.label_delay_s <= 0
        early = self._early.pop(tx.transaction_id, None) if self._early else None
        if early is not None:
            self.early_budget.remove(EARLY_LABEL_ENTRY_BYTES + len(tx.transaction_id))
            label, label_ts, immediate = early[0], early[1], True
        learned = 0
        scores = self._all_scores(score, shadow) if shadow else ()
        names = state.features.feature_names
        if label is not None and immediate:
            self._learn(state, tx.transaction_id, features, tx.merchant_id, score, label,
                        label_ts, tx.timestamp, scores, card_id=tx.card_id)
            if state.learned_labels.enabled:
                self._remember_label(state, tx.transaction_id, label, tx.merchant_id,
                                     tx.timestamp, array("d", [features[n] for n in names]),
                                     label_ts)
            learned += 1
        else:
            packed = array("d", [features[name] for name in names])
            decided = Decided(state.partition, tx.merchant_id, tx.timestamp, score, packed,
                              scores)
            self._pending_put(tx.transaction_id, decided)
            if label is not None:
                state.due.push(tx.transaction_id, label, tx.timestamp)
        for tx_id, due_label in state.due.release(state.clock):
            if self._learn_pending(tx_id, due_label, state.clock):
                learned += 1
            else:
                self.unmatched_labels += 1  # its record was evicted before the label was due
        # The id memories forget as the clock moves (one comparison while nothing is due):
        # a sweep every `evict_every` events forgot thousands at once, 12-30 ms a partition.
        state.recent.expire(state.clock)
        state.learned_labels.expire(state.clock)
        if state.events % TIDY_EVERY == 0:
            state.features.evict(state.clock)  # an idle key reads as new: no score moves
            if self.merchants is not None:
                self._tidy_merchants()
        if state.events % self.config.evict_every == 0:
            assume_after = self.config.oversight.unlabelled_as_legit_s
            if assume_after is not None:
                learned += self._assume_legit(state.clock, assume_after)
            for tx_id, old in self.pending.expire(state.clock):
                self._track_pending(old.partition, tx_id, None)
            self._expire_early()
        return learned

    def _tidy_merchants(self) -> None:
        """Evict idle merchants; drop state copies no partition can read any more (a read's
        cutoff is never before its partition's stream time - lateness - delta).

        Every partition's stream time bounds it, the other instances' (as their feed
        records carry it) too, not only the owned ones': a table image
        (`export_merchants`) must answer the reads of any partition restarted from its
        last checkpoint, whoever restarts it. Memory only: no read of an owned partition
        is before its own bound."""
        table = self.merchants
        assert table is not None
        lowest = min((v.stream_time - v.lateness_s for v in self._views.values()),
                     default=float("-inf"))
        horizon = lowest - table.delta_s
        table.release(horizon)
        table.evict(horizon)

    def _all_scores(self, score: float, shadow: Mapping[str, float]) -> tuple[float, ...]:
        """Every model's decision-time score, in the fixed `_names` order."""
        champion = self.model_version
        return tuple(score if name == champion else shadow[name] for name in self._names)

    def _assume_legit(self, now: float, after_s: float) -> int:
        """No chargeback within N days: learn decisions unlabelled for `after_s` of event time
        as legitimate, as if the label arrived then (counted apart, `assumed=True`)."""
        learned = 0
        for tx_id, decided in self.pending.pop_older_than(now - after_s):
            self._track_pending(decided.partition, tx_id, None)
            state = self._partitions.get(decided.partition)
            if state is None:
                continue
            features = dict(zip(state.features.feature_names, decided.features, strict=True))
            self._learn(state, tx_id, features, decided.merchant_id, decided.score, False,
                        decided.timestamp + after_s, decided.timestamp, decided.shadow,
                        assumed=True)
            self._remember_label(state, tx_id, False, decided.merchant_id, decided.timestamp,
                                 decided.features, decided.timestamp + after_s)
            learned += 1
        return learned

    def _expire_early(self) -> None:
        horizon = self.clock - self.config.early_label_ttl_s
        early = self._early
        while early and next(iter(early.values()))[1] < horizon:
            self._drop_early()

    def _drop_early(self) -> None:
        """Forget the oldest early label (never matched: counted as unmatched)."""
        tx_id, _ = self._early.popitem(last=False)
        self.early_budget.remove(EARLY_LABEL_ENTRY_BYTES + len(tx_id))
        self.unmatched_labels += 1

    def learn_label(self, label: Label) -> LabelOutcome:
        """A label from the labels topic: learn from the decision-time record if it is held;
        a label for a transaction learned recently is a correction (the opposite value) or a
        repeat (the same); a label that overtook its transaction is held until that
        transaction is scored."""
        if self._learn_pending(label.transaction_id, label.is_fraud, label.timestamp,
                               label.card_id):
            return "learned"
        for state in self._partitions.values():
            entry = state.learned_labels.entry(label.transaction_id)
            if entry is not None:
                return self._correct(state, label, *entry)
        early, tx_id = self._early, label.transaction_id
        if tx_id not in early:
            self.early_budget.add(EARLY_LABEL_ENTRY_BYTES + len(tx_id))
        early[tx_id] = (label.is_fraud, label.timestamp)
        if len(early) > self.config.early_label_max:
            self._drop_early()
        while self.early_budget.over and len(early) > 1:
            self._drop_early()
            self.early_budget.dropped += 1
        return "held"

    def _pending_put(self, tx_id: str, decided: Decided) -> None:
        self._track_pending(decided.partition, tx_id, decided)
        for old_id, old in self.pending.put(tx_id, decided):  # pushed out: usually none
            self._track_pending(old.partition, old_id, None)

    def _track_pending(self, partition: int, tx_id: str, decided: Decided | None) -> None:
        if not self.config.track_changes:
            return
        row = None if decided is None else (
            decided.merchant_id, decided.timestamp, decided.score,
            encode_vector(decided.features))
        self._pending_changes.setdefault(partition, {})[tx_id] = row
        self.dirty.add(partition)

    def _learn_pending(self, tx_id: str, is_fraud: bool, timestamp: float,
                       card_id: str | None = None) -> bool:
        decided = self.pending.pop(tx_id)
        state = self._partitions.get(decided.partition) if decided else None
        if decided is None or state is None:
            return False
        self._track_pending(decided.partition, tx_id, None)
        names = state.features.feature_names
        features = dict(zip(names, decided.features, strict=True))
        self._learn(state, tx_id, features, decided.merchant_id, decided.score, is_fraud,
                    timestamp, decided.timestamp, decided.shadow, card_id=card_id)
        self._remember_label(state, tx_id, is_fraud, decided.merchant_id, decided.timestamp,
                             decided.features, timestamp)
        return True

    def _remember_label(self, state: PartitionState, tx_id: str, is_fraud: bool,
                        merchant_id: str, decided_at: float, features: array,
                        timestamp: float) -> None:
        """Keep what a label was learned from, for a correction (see `_correct`)."""
        state.learned_labels.put(tx_id, state.learned, timestamp,
                                 (is_fraud, merchant_id, decided_at, features))

    def _correct(self, state: PartitionState, label: Label, seq: int, learned_at: float,
                 entry: Learned) -> LabelOutcome:
        """A label for a transaction already learned. The same value is a repeat and changes
        nothing. The opposite value is a correction (a chargeback after an assumed-legitimate
        transaction, an analyst reversing a review): the models take one more step on the
        decision-time features with the corrected label, and the card's and merchant's label
        windows count it, as for any delivered label. The earlier step is not undone (an SGD
        step cannot be subtracted exactly, and later steps were taken from it); the
        prequential metrics keep the label they were given first, as production saw it."""
        was_fraud, merchant_id, decided_at, packed = entry
        if was_fraud == label.is_fraud:
            return "repeated"
        features = dict(zip(state.features.feature_names, packed, strict=True))
        self._step(state, features, label.is_fraud, label.timestamp)
        state.features.learn_label(merchant_id, label.is_fraud, label.timestamp, label.card_id,
                                  state.clock)
        state.learned += 1
        state.learned_labels.put(label.transaction_id, seq, learned_at,
                                 (label.is_fraud, merchant_id, decided_at, packed))
        self.dirty.add(state.partition)
        return "corrected"

    def _step(self, state: PartitionState, features: dict[str, float], is_fraud: bool,
              t: float, weight: float = 1.0) -> None:
        """The models' step on one label known at `t`: the champion's (the shared one's as a
        table event, folded in event-time order) and every challenger's, each weighted by
        `weight` (scoring/sampling.py; the shared champion learns every label, weight 1)."""
        timeline = self.timeline
        if timeline is None:
            learn_one(state.model, features, is_fraud, weight, t)
        else:
            view = cast(TableView, state.merchants)
            view.learn([features[name] for name in timeline.names], is_fraud, t)
        for model in state.challengers.values():
            learn_one(model, features, is_fraud, weight, t)

    def _learn(
        self,
        state: PartitionState,
        tx_id: str,
        features: dict[str, float],
        merchant_id: str,
        score: float,
        is_fraud: bool,
        timestamp: float,
        decided_at: float,
        scores: tuple[float, ...] = (),
        assumed: bool = False,
        card_id: str | None = None,
    ) -> None:
        if self.timeline is None and self.sampling.enabled:
            weight = self.sampling.weight(tx_id, is_fraud, score)
            if weight > 0.0:
                self._step(state, features, is_fraud, timestamp, weight)
        else:
            self._step(state, features, is_fraud, timestamp)
        state.features.learn_label(merchant_id, is_fraud, timestamp, card_id, state.clock)
        # Challengers are compared only on decisions whose every score was kept (not on
        # records restored from a changelog, which hold the deciding score alone).
        shadow = None
        champion = self.oversight.champion
        if scores and champion is not None:
            shadow = {name: s for name, s in zip(self._names, scores, strict=True)
                      if name != champion}
        drift, promotion = self.oversight.labelled(
            state.partition, is_fraud, score, shadow, decided_at, timestamp, assumed)
        state.learned += 1
        self.dirty.add(state.partition)
        if drift is not None:
            _log_drift(self.oversight, drift)
        if promotion is not None:
            self._promote(promotion)

    def _promote(self, promotion: Promotion) -> None:
        """Swap champion and challenger in every partition; the verdicts say so from now."""
        new, old = promotion.challenger, promotion.champion
        for state in self._partitions.values():
            challenger = state.challengers.pop(new)
            state.challengers[old] = state.model
            state.model = challenger
            self.dirty.add(state.partition)
        self.model_version = new
        self.oversight.promoted(promotion)
        log.warning(
            "promoted challenger %s to champion (was %s): %s %.4f vs %.4f over %d labels",
            new, old, promotion.metric, promotion.challenger_value, promotion.champion_value,
            promotion.labels)

    # -- checkpoints ------------------------------------------------------------------------
    def drain_changes(self, partition: int) -> PartitionChanges:
        """The partition's changes since its last drain, for the changelog (plain values)."""
        self.dirty.discard(partition)
        changes = changes_of(self._partitions[partition], self.pending, self.model_version,
                             self._pending_changes.pop(partition, {}), self.config.state_key)
        changes.tombstones = self._tombstones.pop(partition, [])
        return changes

    def forget_rows(self, partition: int, keys: list[bytes]) -> None:
        """Delete these changelog keys at the partition's next checkpoint: rows quarantined
        on restore, so that no later restore meets them (and counts them) again."""
        if keys and partition in self._partitions:
            self._tombstones.setdefault(partition, []).extend(keys)
            self.dirty.add(partition)

    def restore_from_changelog(self, partition: int, restored: RestoredState,
                               where: str = "changelog") -> list[Quarantined]:
        """Rebuild a partition from its changelog (a fresh state when there is none); the
        model snapshot is authenticated with the configured state key (SnapshotError if it
        cannot be). Returns the rows skipped for not fitting the feature set (`where` names
        the changelog partition in messages)."""
        self.revoke(partition)
        state = self.assign(partition)
        key = self.config.state_key
        stale: list[bytes] = []
        skipped = apply_restored(state, restored, self.model_version, self.pending, key, where,
                                 stale)
        self._advance_clock(state)
        self.dirty.discard(partition)
        self.forget_rows(partition, stale)  # per-transaction rows the segments replaced
        if restored.snapshot is not None and signed_with_previous(restored.snapshot, key):
            # Key rotation (state/keys.py): the next checkpoint re-signs it with the new key.
            self.dirty.add(partition)
            log.warning("%s: model snapshot signed with a previous state key; re-signed with "
                        "the current key (id %s) at the next checkpoint", where,
                        key.key_id if key is not None else "?")
        return skipped

    # -- read-only views for metrics and the summary ---------------------------------------
    def summary(self) -> Summary:
        return self.evaluation.summary()

    def state_sizes(self) -> dict[str, Any]:
        cards = sum(s.features.n_cards for s in self._partitions.values())
        merchants = (len(self.merchants) if self.merchants is not None
                     else sum(s.features.n_merchants for s in self._partitions.values()))
        parts = self._partitions.values()
        return {"cards": cards, "merchants": merchants, "pending_labels": len(self.pending),
                "early_labels": len(self._early),
                "recent_transactions": sum(len(s.recent) for s in parts),
                "learned_labels": sum(len(s.learned_labels) for s in parts)}

    def state_budgets(self) -> dict[str, ByteBudget]:
        """The byte budget of each bounded store, by the kind `state_sizes` names it."""
        return {"cards": self.card_budget, "pending_labels": self.pending.budget,
                "early_labels": self.early_budget}


def _log_drift(oversight: Oversight, drift: DriftEvent) -> None:
    # At most one line per kind and partition per drift_log_interval_s of event time, with
    # the count of those not logged (evaluation/alarms.py); the metric counts every one.
    line = oversight.alarms.line(drift)
    if line is not None:
        log.log(line.level, "%s", line.message)

