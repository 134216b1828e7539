"""Duplicates and label corrections (issue 13, item 6): deliberate, counted, and restored.

A repeated transaction id gets its first decision again without touching state; a label
with the opposite value of one already learned is learned again and counted as a correction,
the same value again as a repeat. Both memories travel through the changelog, so a restarted
scorer answers exactly as one that never stopped.
"""

from __future__ import annotations

import logging

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keys_support import KEY
from memory_support import run_items as _run
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import pipeline_config
from stream.config import load_settings
from stream.contracts.messages import Label, Transaction
from stream.core.evaluation.oversight import OversightConfig
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.core.scoring.model import learn_one
from stream.core.scoring.recent import RecentIds
from stream.kafka.records import Record
from stream.observability.metrics import Metrics
from stream.serving.handlers import RecordHandler
from stream.serving.intake import Arrival
from stream.serving.ledger import Ledger
from stream.state.changelog import RestoredState, encode_changes, fold

T0 = 1_767_225_600.0


def _tx(i: int, ts: float, card: str = "c1", fraud: bool | None = None,
        amount: float = 10.0, tx_id: str | None = None) -> Transaction:
    return Transaction(tx_id or f"t{i}", card, f"m{i % 3}", amount, T0 + ts, fraud)


def _weights(pipe: Pipeline, partition: int = 0) -> tuple[dict[str, float], float]:
    """The champion's learned parameters: its weights and its intercept."""
    regression = pipe.partitions[partition].model["LogisticRegression"]
    return dict(regression.weights), regression.intercept


# -- duplicates -------------------------------------------------------------------------------
def test_a_duplicate_gets_the_first_verdict_and_touches_no_state() -> None:
    pipe = Pipeline(PipelineConfig(track_changes=True, state_key=KEY))
    for i in range(20):
        pipe.score(_tx(i, float(i), fraud=i % 4 == 0, amount=5.0 + i), 0)
    first = pipe.score(_tx(20, 20.0, amount=900.0), 0)
    state = pipe.partitions[0]
    cards_before = state.features.export_state()
    weights, pending, learned = _weights(pipe), len(pipe.pending), state.learned

    again = pipe.score(_tx(20, 21.0, amount=900.0), 0)

    assert again.duplicate and not first.duplicate
    assert (again.score, again.decision, again.model_state) == (
        first.score, first.decision, first.model_state)
    assert again.learned == 0 and not again.features
    assert state.features.export_state() == cards_before  # velocity counts it once
    assert _weights(pipe) == weights and len(pipe.pending) == pending
    assert state.learned == learned
    # The next distinct transaction is scored as if the duplicate had never come.
    twin = Pipeline(PipelineConfig(track_changes=True, state_key=KEY))
    for i in range(21):
        twin.score(_tx(i, float(i), fraud=i % 4 == 0 if i < 20 else None,
                       amount=5.0 + i if i < 20 else 900.0), 0)
    assert pipe.score(_tx(22, 30.0), 0).score == twin.score(_tx(22, 30.0), 0).score


def test_a_duplicate_carrying_a_label_learns_nothing() -> None:
    pipe = Pipeline(PipelineConfig())
    pipe.score(_tx(0, 0.0, fraud=False), 0)
    weights = _weights(pipe)
    assert pipe.score(_tx(0, 1.0, fraud=True), 0).duplicate
    assert _weights(pipe) == weights and pipe.partitions[0].learned == 1


def test_duplicates_are_remembered_within_the_window_and_the_size_bound() -> None:
    pipe = Pipeline(PipelineConfig(dedupe_window_s=100.0, dedupe_max=3, evict_every=1))
    pipe.score(_tx(0, 0.0), 0)
    assert pipe.score(_tx(0, 50.0), 0).duplicate  # within the window
    pipe.score(_tx(1, 150.0), 0)  # the clock passes t0's window: it is forgotten
    assert not pipe.score(_tx(0, 151.0), 0).duplicate
    for i in range(2, 6):  # four more ids: only the last three are remembered
        pipe.score(_tx(i, 152.0 + i), 0)
    assert not pipe.score(_tx(2, 160.0), 0).duplicate
    assert pipe.score(_tx(5, 161.0), 0).duplicate


def test_the_memories_forget_as_the_clock_moves_not_in_periodic_sweeps() -> None:
    """A sweep every `evict_every` events (10,000) forgot thousands of ids at once, a 12-30 ms
    stall of the partition, and until then answered for ids past their window."""
    pipe = Pipeline(PipelineConfig(dedupe_window_s=100.0, correction_window_s=100.0))
    for i in range(10):
        pipe.score(_tx(i, float(i), fraud=i % 2 == 0), 0)
    state = pipe.partitions[0]
    assert len(state.recent) == 10 and len(state.learned_labels) == 10
    pipe.score(_tx(10, 105.5), 0)  # t0..t5 are now older than the window
    assert len(state.recent) == 5 and len(state.learned_labels) == 4
    assert not pipe.score(_tx(3, 106.0), 0).duplicate
    assert pipe.score(_tx(8, 107.0), 0).duplicate


def test_the_memory_is_per_partition_and_can_be_turned_off() -> None:
    pipe = Pipeline(PipelineConfig())
    pipe.score(_tx(0, 0.0), 0)
    assert not pipe.score(_tx(0, 1.0), 1).duplicate  # another partition, another card
    off = Pipeline(PipelineConfig(dedupe_max=0))
    off.score(_tx(0, 0.0), 0)
    assert not off.score(_tx(0, 1.0), 0).duplicate
    assert len(off.partitions[0].recent) == 0


# -- corrections ------------------------------------------------------------------------------
def test_a_correction_is_learned_and_a_repeat_is_not() -> None:
    pipe = Pipeline(PipelineConfig())
    for i in range(5):
        pipe.score(_tx(i, float(i)), 0)
    assert pipe.learn_label(Label("t2", "c1", False, T0 + 100.0)) == "learned"
    weights = _weights(pipe)
    assert pipe.learn_label(Label("t2", "c1", False, T0 + 101.0)) == "repeated"
    assert _weights(pipe) == weights

    assert pipe.learn_label(Label("t2", "c1", True, T0 + 200.0)) == "corrected"
    corrected = _weights(pipe)
    assert corrected != weights
    assert pipe.partitions[0].learned == 2
    # The corrected value is now the one remembered: repeating it changes nothing more, and
    # the summary (prequential metrics) kept the first label, as production saw it.
    assert pipe.learn_label(Label("t2", "c1", True, T0 + 201.0)) == "repeated"
    assert _weights(pipe) == corrected
    assert pipe.summary().labels == 1 and pipe.summary().positives == 0


def test_a_correction_steps_from_the_decision_time_features() -> None:
    """The corrective step is the one a fresh label would take on the same features."""
    pipe, reference = Pipeline(PipelineConfig()), Pipeline(PipelineConfig())
    for p in (pipe, reference):
        p.score(_tx(0, 0.0, amount=700.0), 0)
        for i in range(1, 10):  # later events move the card on
            p.score(_tx(i, float(i), amount=3.0), 0)
    assert pipe.learn_label(Label("t0", "c1", False, T0 + 50.0)) == "learned"
    assert pipe.learn_label(Label("t0", "c1", True, T0 + 60.0)) == "corrected"
    # reference: learn "legitimate", then "fraud" as if it had been a second, fresh record.
    decided = reference.pending.pop("t0")
    assert decided is not None
    state = reference.partitions[0]
    features = dict(zip(state.features.feature_names, decided.features, strict=True))
    learn_one(state.model, features, False)
    learn_one(state.model, features, True)
    assert _weights(pipe) == _weights(reference)


def test_a_chargeback_after_an_assumed_legitimate_transaction_is_a_correction() -> None:
    oversight = OversightConfig(unlabelled_as_legit_s=1000.0)
    pipe = Pipeline(PipelineConfig(oversight=oversight, evict_every=1))
    pipe.score(_tx(0, 0.0), 0)
    pipe.score(_tx(1, 2000.0), 0)  # t0 is now learned as legitimate, by assumption
    assert "t0" not in pipe.pending
    assert pipe.learn_label(Label("t0", "c1", True, T0 + 3000.0)) == "corrected"


def test_corrections_can_be_turned_off() -> None:
    pipe = Pipeline(PipelineConfig(correction_max=0))
    pipe.score(_tx(0, 0.0, fraud=False), 0)
    assert pipe.learn_label(Label("t0", "c1", True, T0 + 5.0)) == "held"


# -- the memory itself -----------------------------------------------------------------------
operations = st.lists(st.tuples(st.sampled_from(["put", "put", "expire"]),
                                st.sampled_from("abcdefg"), st.floats(0.0, 40.0)), max_size=60)


@given(ops=operations, max_size=st.integers(1, 6), window=st.floats(1.0, 100.0))
def test_recent_ids_match_a_plain_list_and_restore_from_their_changes(
        ops: list[tuple[str, str, float]], max_size: int, window: float) -> None:
    """Against a batch recomputation: a list with the same rules (a known id keeps its place,
    its sequence and its time; the oldest go first). Its drained changes, folded as a
    changelog would, restore the same memory in the same order after every step."""
    memory = RecentIds[int](max_size, window, track_changes=True)
    reference: list[tuple[str, int, float, int]] = []
    rows: dict[str, tuple[int, float, int]] = {}
    now, seq = 0.0, 0
    for op, key, gap in ops:
        now += gap
        if op == "put":
            seq += 1
            memory.put(key, seq, now, seq)
            at = next((i for i, e in enumerate(reference) if e[0] == key), None)
            if at is not None:
                reference[at] = (*reference[at][:3], seq)
            else:
                reference.append((key, seq, now, seq))
                del reference[:-max_size]
        else:
            memory.expire(now)
            reference = [e for e in reference if e[2] >= now - window]
        assert [(k, *e) for k, e in memory.items()] == reference
        for k, entry in memory.drain_changes().items():
            if entry is None:
                rows.pop(k, None)
            else:
                rows[k] = entry
        restored = RecentIds[int](max_size, window)
        restored.restore(rows.items())
        assert restored.items() == memory.items()


# -- restored exactly -------------------------------------------------------------------------
def _stream() -> list[Transaction | Label]:
    """Transactions on a few cards, labels on the topic, duplicates of ids seen before and
    after the restart point, and corrections of labels learned before it."""
    items: list[Transaction | Label] = []
    for i in range(300):
        ts = i * 7.0
        items.append(_tx(i, ts, card=f"c{i % 11}", fraud=i % 9 == 0 if i % 2 else None,
                         amount=3.0 + (i * 37) % 400))
        if i % 5 == 4:  # a producer's retry of a recent transaction
            j = i - 3
            items.append(_tx(j, ts + 1.0, card=f"c{j % 11}", amount=3.0 + (j * 37) % 400))
        if i % 6 == 0 and i >= 12:
            j = i - 10
            items.append(Label(f"t{j}", f"c{j % 11}", j % 4 == 0, T0 + ts + 2.0))
        if i % 15 == 0 and i >= 30:
            j = i - 28  # a label, or its correction
            items.append(Label(f"t{j}", f"c{j % 11}", j % 3 == 0, T0 + ts + 3.0))
    return items


def test_a_restored_partition_answers_duplicates_and_corrections_exactly_as_before() -> None:
    config = PipelineConfig(track_changes=True, state_key=KEY, label_delay_s=30.0, evict_every=20,
                            dedupe_window_s=400.0, dedupe_max=40, correction_max=25)
    items = _stream()
    straight = Pipeline(config)
    expected = _run(straight, items)
    outcomes = [o for o in expected if isinstance(o, str)]
    assert {"learned", "repeated", "corrected"} <= set(outcomes)
    assert any(isinstance(o, tuple) and o[2] for o in expected)

    cut = len(items) * 3 // 5
    live, restored = Pipeline(config), RestoredState()
    for n, item in enumerate(items[:cut], start=1):
        _run(live, [item])
        if n % 37 == 0 or n == cut:
            for key, value in encode_changes(live.drain_changes(0)):
                fold(restored, key, None if value is None else bytes(value))
    assert restored.recent_segments and restored.learned_segments
    resumed = Pipeline(config)
    resumed.restore_from_changelog(0, restored)
    state, before = resumed.partitions[0], live.partitions[0]
    # Restored in the order built, so bound and window forget the same ids next.
    assert state.recent.items() == before.recent.items()
    assert state.learned_labels.items() == before.learned_labels.items()
    assert _run(resumed, items[cut:]) == expected[cut:]
    assert _weights(resumed) == _weights(straight)


def test_unreadable_memory_rows_are_quarantined_not_restored() -> None:
    """Rows anyone could have written to the changelog: a bad one is skipped and counted,
    as for the other rows (stream/state/changelog.py), and the partition restores the rest."""
    config = PipelineConfig(track_changes=True, state_key=KEY)
    live = Pipeline(config)
    live.assign(0)
    live.score(_tx(0, 0.0, fraud=True), 0)
    restored = RestoredState()
    for key, value in encode_changes(live.drain_changes(0)):
        fold(restored, key, value)
    for key, value in ((b"d:bad", b'[1, 2.0, 0.5, "maybe", "ready"]'), (b"d:short", b"[1]"),
                       (b"l:bad", b'[1, 2.0, 1, "m", 2.0, [1.0]]'), (b"l:nan", b"[1, NaN]"),
                       (b"l:narrow", b'[2, 2.0, true, "m", 2.0, [1.0]]')):
        fold(restored, key, value)
    assert sorted((q.store, q.reason) for q in restored.quarantined) == [
        ("learned", "bad_shape"), ("learned", "bad_shape"), ("recent", "bad_shape"),
        ("recent", "bad_shape")]
    resumed = Pipeline(config)
    skipped = resumed.restore_from_changelog(0, restored)
    assert [(q.store, q.reason, q.key) for q in skipped] == [
        ("learned", "wrong_width", b"l:narrow")]
    state = resumed.partitions[0]
    assert [k for k, _ in state.recent.items()] == ["t0"]
    assert [k for k, _ in state.learned_labels.items()] == ["t0"]


# -- counted and logged -----------------------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: object = None) -> None:
        self.sent.append((topic, value))


def _arrival(offset: int, item: Transaction | Label, topic: str) -> Arrival:
    record = Record(topic, 0, offset, item.card_id.encode(), b"{}", int(T0 * 1000))
    return Arrival(record, item, item.timestamp, 0.0)


def test_duplicates_and_corrections_are_counted_from_zero_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={}, **PER_PARTITION)
    registry = CollectorRegistry()
    sink, ledger = _Sink(), Ledger()
    handler = RecordHandler(settings, Pipeline(pipeline_config(settings)), Metrics(registry),
                            sink, ledger, co_partitioned_output=False)

    def value(name: str, **labels: str) -> float:
        got = registry.get_sample_value(name, labels)
        assert got is not None, (name, labels)  # exported from zero
        return got

    assert value("fraudstream_events_total", outcome="duplicate") == 0.0
    assert value("fraudstream_labels_total", source="topic", outcome="corrected") == 0.0
    assert value("fraudstream_labels_total", source="topic", outcome="repeated") == 0.0

    tx = _tx(0, 0.0, amount=50.0)
    handler.transaction(_arrival(0, tx, settings.input_topic))
    with caplog.at_level(logging.INFO, logger="stream.serving"):
        handler.transaction(_arrival(1, tx, settings.input_topic))
        handler.label(_arrival(0, Label("t0", "c1", False, T0 + 9.0), settings.labels_topic))
        handler.label(_arrival(1, Label("t0", "c1", False, T0 + 9.0), settings.labels_topic))
        handler.label(_arrival(2, Label("t0", "c1", True, T0 + 10.0), settings.labels_topic))
    # Counted per poll: the loop flushes the handler's counts after each poll's records.
    assert value("fraudstream_events_total", outcome="scored") == 0.0
    handler.flush_metrics()

    verdicts = [orjson.loads(v or b"") for t, v in sink.sent if t == settings.output_topic]
    assert len(verdicts) == 2  # every input gets a verdict: the duplicate its first again
    assert verdicts[0]["score"] == verdicts[1]["score"]
    assert verdicts[0]["decision"] == verdicts[1]["decision"]
    assert value("fraudstream_events_total", outcome="scored") == 1.0
    assert value("fraudstream_events_total", outcome="duplicate") == 1.0
    assert ledger.result.verdicts == 2 and ledger.result.duplicates == 1
    assert value("fraudstream_labels_total", source="topic", outcome="learned") == 1.0
    assert value("fraudstream_labels_total", source="topic", outcome="repeated") == 1.0
    assert value("fraudstream_labels_total", source="topic", outcome="corrected") == 1.0
    assert value("fraudstream_labels_total", source="topic", outcome="held") == 0.0
    assert value("fraudstream_model_updates_total") == 2.0
    lines = [r.getMessage() for r in caplog.records]
    assert sum("label correction" in line for line in lines) == 1
    assert sum("duplicate transaction" in line for line in lines) == 1
    assert any("t0 learned again as fraud (was legitimate)" in line for line in lines)
