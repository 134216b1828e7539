"""The core's promises, without a broker: score first, learn after, labels joined honestly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from keys_support import KEY

from stream.contracts.messages import Label, Transaction
from stream.core.evaluation.oversight import OversightConfig
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.model import score_one
from stream.core.scoring.warmup import Warmup
from stream.state.changelog import RestoredState, encode_changes, fold
from stream.state.snapshot import (
    SnapshotError,
    check_compatible,
    decode_snapshot,
    encode_snapshot,
    load_snapshot,
    read_header,
    save_snapshot,
)


def _tx(i: int, fraud: bool | None = None, card: str = "c1", ts: float | None = None,
        amount: float = 10.0) -> Transaction:
    return Transaction(f"t{i}", card, "m1", amount, 1_700_000_000.0 + (ts if ts is not None else i),
                       fraud)


def test_own_label_never_influences_own_score() -> None:
    a, b = Pipeline(PipelineConfig()), Pipeline(PipelineConfig())
    for i in range(50):
        a.score(_tx(i, fraud=i % 3 == 0), 0)
        b.score(_tx(i, fraud=i % 3 == 0), 0)
    # Same history; the next event is labelled fraud in one pipeline and legit in the other.
    fraud, legit = a.score(_tx(50, fraud=True), 0), b.score(_tx(50, fraud=False), 0)
    assert fraud.score == legit.score
    assert fraud.learned == legit.learned == 1


def test_the_model_learns_after_scoring() -> None:
    pipe = Pipeline(PipelineConfig())
    first = pipe.score(_tx(0, fraud=True), 0)
    assert first.score == 0.5 and first.learned == 1
    assert pipe.partitions[0].learned == 1


def test_unlabelled_events_wait_for_a_label_on_the_topic() -> None:
    pipe = Pipeline(PipelineConfig())
    scored = pipe.score(_tx(0), 0)
    assert scored.learned == 0 and len(pipe.pending) == 1
    before = pipe.partitions[0].model["LogisticRegression"].weights.copy()
    assert pipe.learn_label(Label("t0", "c1", True, 1_700_000_100.0)) == "learned"
    assert pipe.partitions[0].model["LogisticRegression"].weights != before
    # The same label again is a repeat (see test_duplicates_corrections.py), not held.
    assert pipe.learn_label(Label("t0", "c1", True, 1_700_000_100.0)) == "repeated"
    assert pipe.learn_label(Label("never-seen", "c1", True, 1.0)) == "held"
    snap = pipe.summary()
    assert snap.labels == 1 and snap.positives == 1


def test_delayed_label_learns_from_decision_time_features() -> None:
    """A label learned late must use the features the transaction was scored with."""
    delayed = Pipeline(PipelineConfig(label_delay_s=3600.0))
    first = delayed.score(_tx(0, fraud=True, amount=500.0), 0)
    # Many later events change the card's history before the label is due.
    for i in range(1, 30):
        assert delayed.score(_tx(i, ts=float(i), amount=5.0), 0).learned == 0
    released = delayed.score(_tx(30, ts=3600.0, amount=5.0), 0)
    assert released.learned == 1

    immediate = Pipeline(PipelineConfig())
    immediate.score(_tx(0, fraud=True, amount=500.0), 0)
    w_delayed = delayed.partitions[0].model["LogisticRegression"].weights
    w_immediate = immediate.partitions[0].model["LogisticRegression"].weights
    assert w_delayed == pytest.approx(w_immediate)
    assert first.score == 0.5


def test_evaluation_uses_decision_time_scores() -> None:
    pipe = Pipeline(PipelineConfig())
    scores = []
    for i in range(200):
        fraud = i % 10 == 0
        amount = 900.0 if fraud else 20.0
        scores.append((pipe.score(_tx(i, fraud=fraud, amount=amount, ts=i * 60.0), 0).score,
                       fraud))
    snap = pipe.summary()
    assert snap.labels == 200 and snap.positives == 20
    assert 0.0 <= snap.roc_auc <= 1.0 and math.isfinite(snap.log_loss)


def test_partitions_have_independent_models() -> None:
    pipe = Pipeline(PipelineConfig())
    for i in range(20):
        pipe.score(_tx(i, fraud=True), 0)
    fresh = pipe.assign(1)
    assert score_one(fresh.model, {"amount_log": 1.0}) == 0.5
    pipe.revoke(0)
    assert 0 not in pipe.partitions


def test_verdict_mix_follows_the_policy() -> None:
    pipe = Pipeline(PipelineConfig(warmup=Warmup(labels=0)))
    for i in range(300):
        scored = pipe.score(_tx(i, fraud=i % 7 == 0, card=f"c{i % 13}"), 0)
        expected = pipe.config.policy.decide(scored.score)
        assert scored.decision == expected


def test_a_label_that_overtakes_its_transaction_is_applied_after_scoring() -> None:
    pipe = Pipeline(PipelineConfig())
    assert pipe.learn_label(Label("t0", "c1", True, 1_700_000_000.0)) == "held"
    scored = pipe.score(_tx(0), 0)
    assert scored.score == 0.5 and scored.learned == 1
    assert pipe.summary().labels == 1 and pipe.state_sizes()["early_labels"] == 0


def test_held_labels_are_bounded_and_expire() -> None:
    pipe = Pipeline(PipelineConfig(early_label_max=3, early_label_ttl_s=10.0, evict_every=1))
    for i in range(5):
        pipe.learn_label(Label(f"x{i}", "c", False, 1_700_000_000.0 + i))
    assert pipe.state_sizes()["early_labels"] == 3 and pipe.unmatched_labels == 2
    pipe.score(_tx(1000, ts=1000.0), 0)
    assert pipe.state_sizes()["early_labels"] == 0 and pipe.unmatched_labels == 5


def test_snapshot_round_trip_continues_bit_for_bit(tmp_path: Path) -> None:
    """Stop after N events, restore from the snapshot, and score exactly like a run that
    never stopped: same model, same features, same pending labels."""
    config = PipelineConfig(label_delay_s=600.0)
    events = [_tx(i, fraud=i % 9 == 0, card=f"c{i % 7}", ts=i * 37.0, amount=5.0 + i % 50)
              for i in range(400)]
    straight = Pipeline(config)
    expected = [straight.score(tx, 0).score for tx in events]

    first = Pipeline(config)
    for tx in events[:200]:
        first.score(tx, 0)
    path = tmp_path / "p0.snapshot"
    save_snapshot(path, first.export_partition(0), KEY)
    resumed = Pipeline(config)
    resumed.restore_partition(load_snapshot(path, KEY))
    assert [resumed.score(tx, 0).score for tx in events[200:]] == expected[200:]
    assert resumed.partitions[0].learned == straight.partitions[0].learned


def test_incompatible_snapshots_are_refused(tmp_path: Path) -> None:
    pipe = Pipeline(PipelineConfig())
    pipe.score(_tx(0, fraud=True), 0)
    raw = encode_snapshot(pipe.export_partition(0), KEY)
    header = read_header(raw)
    with pytest.raises(SnapshotError, match="River 0.1.0"):
        check_compatible({**header, "river": "0.1.0"})
    with pytest.raises(SnapshotError, match="format 99"):
        check_compatible({**header, "format": 99})
    with pytest.raises(SnapshotError, match="magic"):
        decode_snapshot(b"garbage", KEY)
    with pytest.raises(SnapshotError, match="failed authentication"):
        decode_snapshot(raw[:-20], KEY)


def test_init_from_a_trained_snapshot() -> None:
    trained = Pipeline(PipelineConfig())
    for i in range(100):
        trained.score(_tx(i, fraud=i % 5 == 0, amount=1000.0 if i % 5 == 0 else 10.0), 0)
    snap = trained.export_partition(0)
    served = Pipeline(PipelineConfig(), init_from=snap)
    state = served.assign(3)
    assert state.learned == 100 and state.model is not snap.model
    probe = _tx(1000, amount=1000.0)
    assert served.score(probe, 3).score == trained.score(probe, 0).score


def test_a_checkpoint_does_not_read_the_pending_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint's snapshot leaves the decision-time records out (they travel as changelog
    keys of their own): it read all of them (every partition's) at every checkpoint of every
    partition, and dropped the list (74% of the scorer's samples in `make quality`'s Kafka
    check, a week of labels pending)."""
    pipe = Pipeline(PipelineConfig(track_changes=True, state_key=KEY))
    for i in range(50):
        pipe.score(_tx(i, card=f"c{i % 7}", ts=i * 60.0), 0)
    assert len(pipe.pending) == 50

    def scan(partition: int) -> None:
        raise AssertionError("the checkpoint read the pending buffer")

    monkeypatch.setattr(pipe.pending, "items_for", scan)
    changes = pipe.drain_changes(0)
    assert len(changes.pending) == 50  # each as its own changelog key
    snapshot = decode_snapshot(changes.snapshot, KEY)
    assert snapshot.pending == [] and snapshot.events == 50


def test_changelog_round_trip_restores_the_exact_state() -> None:
    """Checkpoints drained into changelog records, folded back, give a pipeline that
    continues exactly like one that never stopped; evicted keys come back as tombstones."""
    config = PipelineConfig(label_delay_s=300.0, track_changes=True, state_key=KEY,
                            card_ttl_s=2000.0, evict_every=25)
    events = [_tx(i, fraud=i % 11 == 0, card=f"c{i % 17 if i < 150 else 100 + i % 5}",
                  ts=i * 53.0, amount=3.0 + i % 40) for i in range(400)]
    straight = Pipeline(config)
    expected = [straight.score(tx, 0).score for tx in events]

    live = Pipeline(config)
    restored = RestoredState()
    for n, tx in enumerate(events[:250], start=1):
        live.score(tx, 0)
        if n % 40 == 0 or n == 250:
            for key, value in encode_changes(live.drain_changes(0)):
                fold(restored, key, value)
    assert 0 not in live.dirty
    assert len(restored.cards) == live.partitions[0].features.n_cards < 22
    assert set(restored.pending) == {k for k, _ in live.pending.items_for(0)}
    resumed = Pipeline(config)
    resumed.restore_from_changelog(0, restored)
    assert [resumed.score(tx, 0).score for tx in events[250:]] == expected[250:]
    assert resumed.partitions[0].learned == straight.partitions[0].learned


@pytest.mark.parametrize("via", ["snapshot", "changelog"])
def test_challengers_survive_export_and_restore(via: str) -> None:
    """A challenger's learned state travels with the partition: after a restore it shadows
    exactly like one that never stopped (and a fresh pipeline would not)."""
    oversight = OversightConfig(challengers=("logreg-adam-lr0.01", "gnb"))
    config = PipelineConfig(label_delay_s=300.0, track_changes=True, state_key=KEY,
                            oversight=oversight)
    events = [_tx(i, fraud=i % 11 == 0, card=f"c{i % 13}", ts=i * 41.0, amount=3.0 + i % 40)
              for i in range(300)]
    straight = Pipeline(config)
    expected = [straight.score(tx, 0).challengers for tx in events]

    live = Pipeline(config)
    restored = RestoredState()
    for tx in events[:180]:
        live.score(tx, 0)
    resumed = Pipeline(config)
    if via == "snapshot":
        raw = encode_snapshot(live.export_partition(0), KEY)
        resumed.restore_partition(decode_snapshot(raw, KEY))
    else:
        for key, value in encode_changes(live.drain_changes(0)):
            fold(restored, key, value)
        resumed.restore_from_changelog(0, restored)
    assert set(resumed.partitions[0].challengers) == {"logreg-adam-lr0.01", "gnb"}
    assert [dict(resumed.score(tx, 0).challengers) for tx in events[180:]] == expected[180:]
    fresh = Pipeline(config)
    assert dict(fresh.score(events[180], 0).challengers) != expected[180]


# -- the cold start (stream/core/scoring/warmup.py) ---------------------------------------------
def test_a_fresh_pipeline_approves_while_warming_and_still_scores() -> None:
    """No labels yet: every score is 0.5, which the policy would send to review; the warm-up
    approves instead, and says so."""
    pipe = Pipeline(PipelineConfig())
    results = [pipe.score(_tx(i, card=f"c{i % 7}", amount=5.0 + i), i % 2) for i in range(200)]
    assert {r.score for r in results} == {0.5}
    assert pipe.config.policy.decide(0.5) == "review"
    assert {(r.decision, r.model_state) for r in results} == {("approve", "warming")}
    assert all(not r.contributions for r in results)


def test_fallback_rules_decide_by_amount_while_warming() -> None:
    pipe = Pipeline(PipelineConfig(warmup=Warmup(500, review_amount=100.0,
                                                 decline_amount=1000.0)))
    decided = [pipe.score(_tx(i, amount=amount), 0)
               for i, amount in enumerate((5.0, 100.0, 999.0, 1000.0, 20.0))]
    assert [d.decision for d in decided] == ["approve", "review", "review", "decline",
                                             "approve"]
    assert {d.model_state for d in decided} == {"warming"}
    assert decided[1].contributions and decided[3].contributions  # kept for the analyst


def test_ready_after_the_configured_labels_then_the_score_decides() -> None:
    events = [_tx(i, fraud=i % 4 == 0, card=f"c{i % 5}", amount=900.0 if i % 4 == 0 else 15.0)
              for i in range(120)]
    warm = Pipeline(PipelineConfig(warmup=Warmup(labels=40)))
    cold = Pipeline(PipelineConfig(warmup=Warmup(labels=0)))
    ran = [(warm.score(tx, 0), cold.score(tx, 0)) for tx in events]
    # The warm-up changes decisions only: the model scored and learned exactly the same.
    assert [w.score for w, _ in ran] == [c.score for _, c in ran]
    assert warm.partitions[0].learned == cold.partitions[0].learned == 120
    # Event i is scored after i in-event labels were learned: 40 warming, then ready.
    assert [w.model_state for w, _ in ran] == ["warming"] * 40 + ["ready"] * 80
    assert {w.decision for w, _ in ran[:40]} == {"approve"}
    assert [w.decision for w, _ in ran[40:]] == [c.decision for _, c in ran[40:]] == [
        warm.config.policy.decide(w.score) for w, _ in ran[40:]]
    assert {c.decision for _, c in ran[40:]} != {"approve"}  # the score really decides now


def test_labels_from_the_topic_end_the_warm_up_of_their_partition_only() -> None:
    pipe = Pipeline(PipelineConfig(warmup=Warmup(labels=3)))
    for i in range(3):
        assert pipe.score(_tx(i, card="a"), 0).model_state == "warming"
    for i in range(3):
        assert pipe.learn_label(Label(f"t{i}", "a", i == 0, 1_700_000_100.0)) == "learned"
    assert pipe.score(_tx(10, card="a"), 0).model_state == "ready"
    assert pipe.score(_tx(11, card="b"), 1).model_state == "warming"


def _trained(labels: int) -> Pipeline:
    pipe = Pipeline(PipelineConfig(label_delay_s=300.0, track_changes=True, state_key=KEY))
    for i in range(labels):
        pipe.score(_tx(i, fraud=i % 5 == 0, card=f"c{i % 9}", ts=i * 61.0,
                       amount=800.0 if i % 5 == 0 else 12.0), 0)
    # Push the clock past the label delay so every label is learned.
    pipe.score(_tx(labels, card="late", ts=labels * 61.0 + 301.0), 0)
    assert pipe.partitions[0].learned == labels
    return pipe


def test_a_pipeline_started_from_a_trained_snapshot_is_ready_at_once() -> None:
    snap = _trained(600).export_partition(0)
    served = Pipeline(PipelineConfig(), init_from=snap)
    first = served.score(_tx(5000, card="new", ts=1e6), 2)
    assert first.model_state == "ready"
    assert first.decision == served.config.policy.decide(first.score)
    # A snapshot that learned from fewer labels continues its warm-up from its count.
    short = Pipeline(PipelineConfig(warmup=Warmup(labels=610)), init_from=snap)
    states = [short.score(_tx(6000 + i, fraud=False, ts=1e6 + i), 2).model_state
              for i in range(12)]
    assert states == ["warming"] * 10 + ["ready"] * 2


@pytest.mark.parametrize("via", ["snapshot", "changelog"])
def test_a_restarted_scorer_that_had_learned_enough_is_ready_at_once(via: str) -> None:
    """The learned-label count travels with the partition's state: a restart (changelog) or a
    restore (snapshot) that had learned enough decides by score at once; one that had not
    continues counting where it stopped."""
    config = PipelineConfig(label_delay_s=300.0, track_changes=True, state_key=KEY,
                            warmup=Warmup(labels=500))

    def restarted(live: Pipeline) -> Pipeline:
        resumed = Pipeline(config)
        if via == "snapshot":
            raw = encode_snapshot(live.export_partition(0), KEY)
            resumed.restore_partition(decode_snapshot(raw, KEY))
        else:
            restored = RestoredState()
            for key, value in encode_changes(live.drain_changes(0)):
                fold(restored, key, value)
            resumed.restore_from_changelog(0, restored)
        return resumed

    probe = _tx(9000, card="c1", ts=1e6)
    assert Pipeline(config).score(probe, 0).model_state == "warming"
    assert restarted(_trained(520)).score(probe, 0).model_state == "ready"
    resumed = restarted(_trained(495))
    assert resumed.partitions[0].learned == 495
    # Five more in-event labels end its warm-up, once the 300 s label delay has passed; an
    # event is decided before the labels its own clock releases are learned.
    for i in range(5):
        tx = _tx(9000 + i, fraud=False, card="c1", ts=1e6 + i)
        assert resumed.score(tx, 0).model_state == "warming"
    assert resumed.score(_tx(9100, card="c1", ts=1e6 + 400.0), 0).model_state == "warming"
    assert resumed.partitions[0].learned == 500
    assert resumed.score(_tx(9101, card="c1", ts=1e6 + 401.0), 0).model_state == "ready"

def test_a_restored_clock_beyond_the_bound_is_moved_back() -> None:
    """State written before event times were bounded can carry a year-9999 clock: a restore
    brings it back to the wall clock plus the allowed skew (the caller's), so eviction and
    TTLs run on real time again."""
    config = PipelineConfig(track_changes=True, state_key=KEY)
    poisoned = Pipeline(config)
    poisoned.score(Transaction("t1", "c1", "m1", 10.0, 1.7e9), 0)
    # What an unbounded intake let through:
    poisoned.score(Transaction("t2", "c1", "m1", 10.0, 253_402_300_799.0), 0)
    snapshot = decode_snapshot(encode_snapshot(poisoned.export_partition(0), KEY), KEY)
    restored = Pipeline(config)
    restored.restore_partition(snapshot)
    assert restored.clock == restored.partitions[0].clock == 253_402_300_799.0
    latest = 1.7e9 + 7 * 86400.0
    assert restored.limit_clock(0, latest) is True
    assert restored.clock == restored.partitions[0].clock == latest
    assert restored.limit_clock(0, latest) is False
    assert restored.limit_clock(5, latest) is False  # not owned: nothing to do


def test_idle_cards_go_within_a_hundred_events_not_in_a_sweep_of_ten_thousand() -> None:
    """The stores evict every `TIDY_EVERY` events of a partition: once every `evict_every`
    (10,000) they dropped all that went idle since at once, a stall that grows with the
    traffic of new cards. Eviction never changes a score (an idle key reads as new)."""
    from stream.core.pipeline import TIDY_EVERY

    config = PipelineConfig(card_ttl_s=100.0)
    pipe, twin = Pipeline(config), Pipeline(config)  # the twin evicts after every event
    most = 0
    for i in range(1000):  # a new card every 10 s: ten within the TTL at any time
        tx = _tx(i, card=f"c{i}", ts=10.0 * i)
        assert pipe.score(tx, 0).score == twin.score(tx, 0).score
        twin.partitions[0].features.evict(twin.partitions[0].clock)
        most = max(most, pipe.partitions[0].features.n_cards)
    assert most <= 11 + TIDY_EVERY
