"""One input partition's learned state, and moving it in and out of snapshots and changelogs.

A partition owns its card and merchant features, its champion and challenger models, its
in-event label queue and its clock: the unit of state and of parallelism, as a Kafka Streams
task, which is what lets a partition move between instances with what it learned. The
decision-time records awaiting labels (`PendingBuffer`) are pipeline-wide and keyed by
transaction; they travel with their partition here too. So do its recent decisions and
recently learned labels (`RecentIds`: duplicates and corrections), each restored in the
order it was built.
"""

from __future__ import annotations

import copy
from array import array
from typing import Any, cast

from river import compose

from stream.contracts.messages import Decision, ModelState
from stream.core.features.extractor import FeatureExtractor, MerchantView
from stream.core.pipeline_config import PipelineConfig
from stream.core.scoring.model import make_model
from stream.core.scoring.pending import Decided, DueLabels, PendingBuffer
from stream.core.scoring.recent import RecentIds
from stream.core.scoring.zoo import make_challenger, parse_challenger
from stream.state.changelog import PartitionChanges, PendingRow, RecentRow, RestoredState
from stream.state.snapshot import PartitionSnapshot, decode_snapshot, encode_snapshot

# A recent decision: (score, decision, model_state) as the verdict gave them.
Recent = tuple[float, Decision, ModelState]
# A learned label: (is_fraud, merchant_id, decision time, decision-time features packed).
Learned = tuple[bool, str, float, array]


class PartitionState:
    """One input partition's features, model and label replay queue."""

    def __init__(self, partition: int, config: PipelineConfig,
                 merchants: MerchantView | None = None) -> None:
        self.partition = partition
        # `merchants`: the partition's view on the shared merchant table; None keeps the
        # merchants in this partition's own state (the traffic of this partition only).
        self.merchants = merchants
        self.features = FeatureExtractor(
            horizons_s=config.horizons_s,
            card_ttl_s=config.card_ttl_s,
            merchant_ttl_s=config.merchant_ttl_s,
            merchant_prior=config.merchant_prior,
            track_changes=config.track_changes,
            merchants=merchants,
        )
        self.model: compose.Pipeline = make_model(config.model)
        # Shadow models: same features, same labels, never decide (see scoring/zoo.py).
        self.challengers: dict[str, Any] = {
            name: make_challenger(parse_challenger(name)) for name in config.oversight.challengers
        }
        self.due = DueLabels(config.label_delay_s)
        # What it decided on recent transactions (a duplicate gets the same verdict again) and
        # what it learned from recent labels (a correction is learned from the same features).
        self.recent: RecentIds[Recent] = RecentIds(
            config.dedupe_max, config.dedupe_window_s, config.track_changes)
        self.learned_labels: RecentIds[Learned] = RecentIds(
            config.correction_max, config.correction_window_s, config.track_changes)
        self.clock = float("-inf")
        self.events = 0
        self.learned = 0


def snapshot_of(state: PartitionState, pending: PendingBuffer, model_name: str,
                with_features: bool = True) -> PartitionSnapshot:
    """Everything the partition has learned, as a snapshot (see state/snapshot.py)."""
    records = [(tx_id, d.merchant_id, d.timestamp, d.score, d.features.tolist())
               for tx_id, d in pending.items_for(state.partition)]
    return PartitionSnapshot(
        partition=state.partition, model=state.model, clock=state.clock, events=state.events,
        learned=state.learned, due=state.due.items(),
        features=state.features.export_state() if with_features else {},
        pending=records, model_name=model_name, challengers=dict(state.challengers),
    )


def load_snapshot(state: PartitionState, snap: PartitionSnapshot, champion: str,
                  pending: PendingBuffer | None) -> None:
    """A snapshot's learning into a fresh partition state; its decision-time records into
    `pending` unless that is None (a warm start from a trained snapshot keeps none)."""
    state.model, challengers = _models_by_name(snap, champion)
    for name in state.challengers:
        if name in challengers:  # a challenger not in the snapshot starts fresh
            state.challengers[name] = copy.deepcopy(challengers[name])
    state.clock, state.events, state.learned = snap.clock, snap.events, snap.learned
    if snap.features:
        state.features.import_state(snap.features)
    if pending is not None:
        state.due.restore(snap.due)
        for tx_id, merchant, ts, score, values in snap.pending:
            pending.put(tx_id, Decided(state.partition, merchant, ts, score, array("d", values)))


def changes_of(state: PartitionState, pending: PendingBuffer, model_name: str,
               pending_changes: dict[str, PendingRow | None]) -> PartitionChanges:
    """The partition's changes since its last drain, for the changelog (plain values)."""
    snapshot = snapshot_of(state, pending, model_name, with_features=False)
    snapshot.pending = []  # pending records travel as their own changelog keys
    changes = state.features.drain_changes()
    cards, cards_evicted = changes["cards"]
    merchants, merchants_evicted = changes["merchants"]
    return PartitionChanges(
        snapshot=encode_snapshot(snapshot), cards=cards, cards_evicted=cards_evicted,
        merchants=merchants, merchants_evicted=merchants_evicted, pending=pending_changes,
        recent={k: None if e is None else [e[0], e[1], *e[2]]
                for k, e in state.recent.drain_changes().items()},
        learned={k: None if e is None else _learned_row(e)
                 for k, e in state.learned_labels.drain_changes().items()},
    )


def _learned_row(entry: tuple[int, float, Learned]) -> RecentRow:
    seq, timestamp, (is_fraud, merchant, decided_at, features) = entry
    return [seq, timestamp, is_fraud, merchant, decided_at, features.tolist()]


def apply_restored(state: PartitionState, restored: RestoredState, champion: str,
                   pending: PendingBuffer) -> None:
    """A changelog's content into a fresh partition state."""
    if restored.snapshot is not None:
        # Its pending list is empty: pending records come from their own keys below.
        load_snapshot(state, decode_snapshot(restored.snapshot), champion, pending)
    store_cards, store_merchants = state.features.card_store, state.features.merchant_store
    # Oldest update first, so eviction (which pops from the front) stays in order.
    for key, row in sorted(restored.cards.items(), key=lambda item: item[1][0]):
        store_cards.restore(key, row)
    for key, row in sorted(restored.merchants.items(), key=lambda item: item[1][0]):
        store_merchants.restore(key, row)
    for tx_id, (merchant, ts, score, values) in restored.pending.items():
        pending.put(tx_id, Decided(state.partition, merchant, ts, score, array("d", values)))
    state.recent.restore(
        (tx_id, (int(row[0]), float(row[1]),
                 (float(row[2]), cast(Decision, row[3]), cast(ModelState, row[4]))))
        for tx_id, row in restored.recent.items())
    state.learned_labels.restore(
        (tx_id, (int(row[0]), float(row[1]),
                 (bool(row[2]), str(row[3]), float(row[4]), array("d", row[5]))))
        for tx_id, row in restored.learned.items())


def _models_by_name(snap: PartitionSnapshot, champion: str) -> tuple[Any, dict[str, Any]]:
    """The snapshot's champion for `champion` (by name when the snapshot knows it, else the
    snapshot's own champion) and every other model by name; a promotion recorded in a
    snapshot is thus undone by a restart that configures the original roles."""
    models = dict(getattr(snap, "challengers", None) or {})  # older snapshots have none
    models[snap.model_name] = snap.model
    model = models.pop(champion, None)
    if model is None:
        model = models.pop(snap.model_name)
    return copy.deepcopy(model), models
