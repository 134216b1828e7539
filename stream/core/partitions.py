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
from stream.core.budget import ByteBudget
from stream.core.features.extractor import FeatureExtractor, MerchantView
from stream.core.features.merchant_table import TableView
from stream.core.pipeline_config import PipelineConfig
from stream.core.scoring.model import in_form_of, make_model
from stream.core.scoring.pending import Decided, DueLabels, PendingBuffer
from stream.core.scoring.recent import RecentIds
from stream.core.scoring.zoo import make_challenger, parse_challenger
from stream.state.changelog import (
    CARD,
    LEARNED,
    LEARNED_FRONT,
    LEARNED_SEGMENT,
    MERCHANT,
    PENDING,
    RECENT,
    RECENT_FRONT,
    RECENT_SEGMENT,
    PartitionChanges,
    PendingRow,
    Quarantined,
    RecentRow,
    RestoredState,
    encode_vector,
)
from stream.state.keys import StateKey
from stream.state.segments import SegmentWriter, remembered
from stream.state.snapshot import (
    PartitionSnapshot,
    SnapshotError,
    decode_snapshot,
    encode_snapshot,
)

# A recent decision: (score, decision, model_state) as the verdict gave them.
Recent = tuple[float, Decision, ModelState]
# A learned label: (is_fraud, merchant_id, decision time, decision-time features packed).
Learned = tuple[bool, str, float, array]


class PartitionState:
    """One input partition's features, model and label replay queue."""

    def __init__(self, partition: int, config: PipelineConfig,
                 merchants: MerchantView | None = None,
                 card_budget: ByteBudget | None = None) -> None:
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
            card_budget=card_budget,
        )
        self.model: compose.Pipeline = make_model(config.model)
        # Shadow models: same features, same labels, never decide (see scoring/zoo.py).
        self.challengers: dict[str, Any] = {
            name: make_challenger(parse_challenger(name), config.model.crosses)
            for name in config.oversight.challengers
        }
        self.due = DueLabels(config.label_delay_s)
        # What it decided on recent transactions (a duplicate gets the same verdict again) and
        # what it learned from recent labels (a correction is learned from the same features).
        self.recent: RecentIds[Recent] = RecentIds(
            config.dedupe_max, config.dedupe_window_s, config.track_changes)
        self.learned_labels: RecentIds[Learned] = RecentIds(
            config.correction_max, config.correction_window_s, config.track_changes)
        # Their changelog segments (stream/state/segments.py).
        self.recent_log = SegmentWriter(RECENT_SEGMENT, RECENT_FRONT)
        self.learned_log = SegmentWriter(LEARNED_SEGMENT, LEARNED_FRONT)
        self.clock = float("-inf")
        self.events = 0
        self.learned = 0


def snapshot_of(state: PartitionState, pending: PendingBuffer, model_name: str,
                with_features: bool = True, with_pending: bool = True) -> PartitionSnapshot:
    """Everything the partition has learned, as a snapshot (see state/snapshot.py).

    `with_pending=False` leaves the decision-time records out without reading them: a
    checkpoint's snapshot does (they travel as changelog keys of their own), and building
    the list only to drop it scanned the whole pending buffer, every partition's, at every
    checkpoint of every partition (py-spy: 74% of the scorer's samples in `make quality`'s
    Kafka check, a week of labels pending)."""
    records = [(tx_id, d.merchant_id, d.timestamp, d.score, d.features.tolist())
               for tx_id, d in pending.items_for(state.partition)] if with_pending else []
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
    restored, challengers = _models_by_name(snap, champion)
    state.model = in_form_of(restored, state.model)  # the configured form (weight average)
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
               pending_changes: dict[str, PendingRow | None],
               key: StateKey | None) -> PartitionChanges:
    """The partition's changes since its last drain, for the changelog (plain values and the
    model snapshot, signed with `key`)."""
    if key is None:
        raise SnapshotError("cannot write the changelog: no state key to sign snapshots with")
    # Pending records travel as their own changelog keys (`pending_changes`).
    snapshot = snapshot_of(state, pending, model_name, with_features=False, with_pending=False)
    changes = state.features.drain_changes()
    cards, cards_evicted = changes["cards"]
    merchants, merchants_evicted = changes["merchants"]
    view = state.merchants
    return PartitionChanges(
        snapshot=encode_snapshot(snapshot, key), cards=cards, cards_evicted=cards_evicted,
        merchants=merchants, merchants_evicted=merchants_evicted, pending=pending_changes,
        segments=_segments(state),
        view=(view.seq, view.stream_time) if isinstance(view, TableView) else None,
    )


def _segments(state: PartitionState) -> list[tuple[bytes, bytes | None]]:
    """The two memories' changed rows as segments, with their fronts (segments.py)."""
    out: list[tuple[bytes, bytes | None]] = []
    recent = state.recent.drain_changes()
    if recent:
        out += state.recent_log.write(
            {k: [e[0], e[1], *e[2]] for k, e in recent.items() if e is not None},
            state.recent.front())
    learned = state.learned_labels.drain_changes()
    if learned:
        out += state.learned_log.write(
            {k: _learned_row(e) for k, e in learned.items() if e is not None},
            state.learned_labels.front())
    return out


def _learned_row(entry: tuple[int, float, Learned]) -> RecentRow:
    seq, timestamp, (is_fraud, merchant, decided_at, features) = entry
    return [seq, timestamp, is_fraud, merchant, decided_at, encode_vector(features)]


def apply_restored(state: PartitionState, restored: RestoredState, champion: str,
                   pending: PendingBuffer, key: StateKey | None,
                   where: str = "changelog", stale: list[bytes] | None = None,
                   ) -> list[Quarantined]:
    """A changelog's content into a fresh partition state: the model snapshot authenticated
    with `key` (a SnapshotError refuses the partition), the rows held to the current feature
    set. Rows of the wrong width are skipped and returned (quarantined), not restored: their
    numbers would mean other features, or break the label join later. The memories'
    per-transaction rows (from before segments) are added to `stale`, for deletion; those
    still remembered are written again, into a segment, at the next checkpoint."""
    if restored.snapshot is not None:
        # Its pending list is empty: pending records come from their own keys below.
        snapshot = decode_snapshot(restored.snapshot, key, f"{where} model snapshot")
        load_snapshot(state, snapshot, champion, pending)
    skipped: list[Quarantined] = []
    for store, prefix, rows in (
            (state.features.card_store, CARD, restored.cards),
            (state.features.merchant_store, MERCHANT, restored.merchants)):
        fitting = _fitting(rows, store.width, prefix, skipped)
        # Oldest update first, so eviction (which pops from the front) stays in order.
        for name, row in sorted(fitting.items(), key=lambda item: item[1][0]):
            store.restore(name, row)
    width = len(state.features.feature_names)
    for tx_id, (merchant, ts, score, values) in restored.pending.items():
        if len(values) != width:
            skipped.append(_wrong_width(PENDING, tx_id, len(values), width))
            continue
        packed = values if isinstance(values, array) else array("d", values)
        pending.put(tx_id, Decided(state.partition, merchant, ts, score, packed))
    gone = stale if stale is not None else []
    recent, alive, moved = remembered(restored.recent, restored.recent_segments,
                                      restored.recent_front)
    state.recent_log.adopt(alive)
    gone += [RECENT + tx_id.encode() for tx_id in restored.recent]
    state.recent.restore(
        ((tx_id, (int(row[0]), float(row[1]),
                  (float(row[2]), cast(Decision, row[3]), cast(ModelState, row[4]))))
         for tx_id, row in recent.items()), restored.recent_front or 0)
    state.recent.changed(moved)
    labels, alive, moved = remembered(restored.learned, restored.learned_segments,
                                      restored.learned_front)
    state.learned_log.adopt(alive)
    gone += [LEARNED + tx_id.encode() for tx_id in restored.learned]
    learned: list[tuple[str, tuple[int, float, Learned]]] = []
    for tx_id, got in labels.items():
        if len(got[5]) != width:
            skipped.append(_wrong_width(LEARNED, tx_id, len(got[5]), width))
            continue
        learned.append((tx_id, (int(got[0]), float(got[1]),
                                (bool(got[2]), str(got[3]), float(got[4]),
                                 got[5] if isinstance(got[5], array) else array("d", got[5])))))
    state.learned_labels.restore(learned, restored.learned_front or 0)
    state.learned_labels.changed(moved)
    if restored.view is not None and isinstance(state.merchants, TableView):
        state.merchants.restore(*restored.view)
    return skipped


def _fitting(rows: dict[str, list[float]], width: int, prefix: bytes,
             skipped: list[Quarantined]) -> dict[str, list[float]]:
    """The rows of `width` numbers; the others are added to `skipped`."""
    fitting = {}
    for name, row in rows.items():
        if len(row) == width:
            fitting[name] = row
        else:
            skipped.append(_wrong_width(prefix, name, len(row), width))
    return fitting


def _wrong_width(prefix: bytes, name: str, got: int, width: int) -> Quarantined:
    store = {CARD: "card", MERCHANT: "merchant", PENDING: "pending", LEARNED: "learned"}[prefix]
    return Quarantined(store, "wrong_width", prefix + name.encode(),
                       f"{got} numbers where the current feature set has {width}")


def champion_of(snap: PartitionSnapshot, champion: str) -> Any:
    """A copy of the snapshot's champion (see `_models_by_name`)."""
    return _models_by_name(snap, champion)[0]


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
