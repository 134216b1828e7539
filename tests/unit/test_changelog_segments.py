"""The recent decisions and learned labels reach the changelog as segments (state/segments.py).

What must hold: a checkpoint writes a few records for them, not one per transaction; what a
restore rebuilds from a compacted changelog (the last value of each key, tombstoned keys
gone) is exactly what the live partition remembered; segments whose rows are all forgotten
are deleted; changelogs written per transaction (before segments) still restore, and their
rows are deleted once forgotten; a segment or front anyone wrote wrongly is quarantined.
"""

from __future__ import annotations

import tracemalloc
from array import array
from base64 import b64decode

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from keys_support import KEY
from memory_support import run_items as _go_on

from stream.contracts.messages import Label, Transaction
from stream.core.pipeline import Pipeline, PipelineConfig
from stream.state.changelog import (
    RestoredState,
    encode_changes,
    encode_vector,
    fold,
    learned_row,
    pending_row,
)
from stream.state.segments import SEGMENT_BYTES, _encoded

T0 = 1.767e9
CONFIG = PipelineConfig(track_changes=True, state_key=KEY, label_delay_s=30.0, evict_every=10,
                        dedupe_window_s=300.0, dedupe_max=60, correction_max=40,
                        correction_window_s=400.0)


def _items(n: int) -> list[Transaction | Label]:
    """Labelled and unlabelled transactions, retries of recent ids, labels and corrections."""
    items: list[Transaction | Label] = []
    for i in range(n):
        ts = T0 + i * 5.0
        items.append(Transaction(f"t{i}", f"c{i % 13}", f"m{i % 4}", 3.0 + (i * 37) % 300, ts,
                                 (i % 7 == 0) if i % 3 else None))
        if i % 4 == 3:
            j = i - 2
            items.append(Transaction(f"t{j}", f"c{j % 13}", f"m{j % 4}", 1.0, ts + 1.0))
        if i % 5 == 0 and i >= 10:
            j = i - 9
            items.append(Label(f"t{j}", f"c{j % 13}", j % 2 == 0, ts + 2.0))
    return items


def _feed(pipe: Pipeline, items: list[Transaction | Label], every: int,
          log: list[tuple[bytes, bytes | None]]) -> None:
    for n, item in enumerate(items, start=1):
        if isinstance(item, Transaction):
            pipe.score(item, 0)
        else:
            pipe.learn_label(item)
        if n % every == 0:
            log += encode_changes(pipe.drain_changes(0))
    log += encode_changes(pipe.drain_changes(0))


def _compacted(log: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes]]:
    """What log compaction leaves: each key's last record, in offset order, tombstones gone."""
    last = {key: offset for offset, (key, _) in enumerate(log)}
    return [(key, value) for offset, (key, value) in enumerate(log)
            if last[key] == offset and value is not None]


def _restored(records: list[tuple[bytes, bytes]]) -> Pipeline:
    restored = RestoredState()
    for key, value in records:
        fold(restored, key, value)
    pipe = Pipeline(CONFIG)
    pipe.restore_from_changelog(0, restored)
    return pipe


def test_a_checkpoint_writes_the_memories_as_a_few_segments() -> None:
    pipe = Pipeline(CONFIG)
    for i in range(50):  # every one labelled: remembered as a decision and as a label
        pipe.score(Transaction(f"t{i}", f"c{i}", "m1", 10.0, T0 + i, i % 5 == 0), 0)
    keys = [key for key, _ in encode_changes(pipe.drain_changes(0))]
    memory = [k for k in keys if k[:1] in (b"D", b"L", b"d", b"l")]
    assert sorted(k.split(b":")[0] for k in memory) == [b"D", b"D", b"L", b"L"], memory
    others = [k for k in keys if k[:2] not in (b"c:", b"n:", b"p:") and k not in memory]
    assert others == [b"m"]  # and the model snapshot


def test_a_restore_from_the_compacted_changelog_remembers_exactly_what_the_live_one_did() -> None:
    items = _items(400)
    straight, live = Pipeline(CONFIG), Pipeline(CONFIG)
    _go_on(straight, items)
    log: list[tuple[bytes, bytes | None]] = []
    cut = len(items) * 2 // 3
    _feed(live, items[:cut], 17, log)
    records = _compacted(log)
    resumed = _restored(records)
    state, before = resumed.partitions[0], live.partitions[0]
    assert state.recent.items() == before.recent.items()
    assert state.learned_labels.items() == before.learned_labels.items()
    assert len(before.recent) == 60 and len(before.learned_labels) < 60  # both forgot some
    # Forgotten segments were deleted: what compaction keeps is about one window's worth.
    alive = [k for k, _ in records if k[:2] in (b"D:", b"L:")]
    assert 2 <= len(alive) <= 2 * (60 // 17 + 3), alive
    # And it goes on exactly as the uninterrupted partition (duplicates, corrections).
    assert _go_on(resumed, items[cut:]) == _go_on(live, items[cut:])
    assert resumed.partitions[0].recent.items() == straight.partitions[0].recent.items()


def test_a_changelog_written_per_transaction_still_restores_and_its_forgotten_rows_go() -> None:
    live = Pipeline(CONFIG)
    log: list[tuple[bytes, bytes | None]] = []
    _feed(live, _items(30), 1000, log)
    before = live.partitions[0]
    # The same memories as the format before segments wrote them: one key per transaction.
    legacy = [(k, v) for k, v in log if k[:2] not in (b"D:", b"L:") and k not in (b"D", b"L")]
    legacy += [(b"d:" + tx_id.encode(), orjson.dumps([e[0], e[1], *e[2]]))
               for tx_id, e in before.recent.items()]
    legacy += [(b"l:" + tx_id.encode(),
                orjson.dumps([e[0], e[1], e[2][0], e[2][1], e[2][2], e[2][3].tolist()]))
               for tx_id, e in before.learned_labels.items()]
    resumed = _restored(legacy)
    assert resumed.partitions[0].recent.items() == before.recent.items()
    assert resumed.partitions[0].learned_labels.items() == before.learned_labels.items()
    old = {k for k, _ in legacy if k[:2] in (b"d:", b"l:")}
    assert len(old) == len(before.recent) + len(before.learned_labels) > 20
    # The next checkpoint moves them into segments and deletes every per-transaction key.
    migrated = encode_changes(resumed.drain_changes(0))
    assert {k for k, v in migrated if v is None} >= old
    again = _restored(_compacted([*legacy, *migrated]))
    assert again.partitions[0].recent.items() == before.recent.items()
    assert again.partitions[0].learned_labels.items() == before.learned_labels.items()


def test_a_bad_segment_or_front_is_quarantined_and_the_rest_restores() -> None:
    live = Pipeline(CONFIG)
    log: list[tuple[bytes, bytes | None]] = []
    _feed(live, _items(20), 1000, log)
    bad = [(b"D:x:0", b'{"t900": [1, 2.0, 0.5, "maybe", "ready"]}'), (b"L:x:0", b"[]"),
           (b"D:x:1", b"{not json"), (b"L", b'"front"')]
    restored = RestoredState()
    for key, value in [*log, *bad]:
        if value is not None:
            fold(restored, key, value)
    assert sorted((q.store, q.reason, q.key) for q in restored.quarantined) == [
        ("learned", "bad_shape", b"L"), ("learned", "bad_shape", b"L:x:0"),
        ("recent", "bad_shape", b"D:x:0"), ("recent", "not_json", b"D:x:1")]
    resumed = Pipeline(CONFIG)
    resumed.restore_from_changelog(0, restored)
    state = resumed.partitions[0]
    assert state.recent.items() == live.partitions[0].recent.items()
    # Without its front every learned row written is kept: none was forgotten yet here.
    assert state.learned_labels.items() == live.partitions[0].learned_labels.items()


def test_a_restore_holds_decision_time_features_packed() -> None:
    """The learned labels' and pending records' features were held as lists of float objects
    until the whole partition was read (about 1.2 KB a row): a 10-minute soak's RSS stepped
    from 229 to 361 MiB at a broker restart's rewind and stayed there. Packed, 8 bytes a
    number."""
    features = [0.1 * i + 0.001 for i in range(36)]
    rows = 20_000
    segments = [(f"L:w:{n}".encode(), orjson.dumps(
        {f"t{n}-{i}": [n * 50 + i, 1.7e9, False, "m1", 1.7e9, features] for i in range(50)}))
        for n in range(rows // 50)]
    pending = [(f"p:q{i}".encode(), orjson.dumps(["m1", 1.7e9, 0.1, features]))
               for i in range(rows)]
    tracemalloc.start()
    try:
        state = RestoredState()
        for key, value in segments + pending:
            fold(state, key, value)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(rows) for rows in state.learned_segments.values()) == rows
    assert len(state.pending) == rows
    # Per row: the id, the row and 36 numbers packed: ~650 B; as lists of floats ~1,520 B.
    assert held / (2 * rows) < 800, held / (2 * rows)


_ROW = st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False)),
                min_size=1, max_size=2_000)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=40), _ROW, max_size=120))
def test_segments_hold_every_row_once_in_order_each_within_the_record_limit(
        rows: dict[str, list[float]]) -> None:
    """The packing that encodes each row once: every chunk is exactly orjson's encoding of
    its rows (what a restore decodes), within SEGMENT_BYTES unless a single row is larger,
    and the chunks together are the rows, in order."""
    chunks = _encoded(rows)
    assert [k for chunk, _ in chunks for k in chunk] == list(rows)
    for chunk, value in chunks:
        assert value == orjson.dumps(chunk)
        assert len(value) <= SEGMENT_BYTES or len(chunk) == 1
    assert len(chunks) <= 1 + 2 * len(orjson.dumps(rows)) // SEGMENT_BYTES


_FEATURES = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(_FEATURES)
def test_decision_time_features_come_back_bit_for_bit_in_either_encoding(
        features: list[float]) -> None:
    """Pending records and learned labels carry their features as `encode_vector` text
    (base64 of the doubles); a restore reads it, and the JSON arrays written before it, to
    the same doubles, bit for bit (-0.0 and subnormals included)."""
    packed = array("d", features)
    text = encode_vector(packed)
    for written in (text, features):
        pending = pending_row(orjson.dumps(["m1", T0, 0.25, written]))
        learned = learned_row(orjson.dumps([3, T0, True, "m1", T0, written]))
        assert pending[3].tobytes() == packed.tobytes()
        assert learned[5].tobytes() == packed.tobytes()
    assert len(text) == 4 * ((8 * len(features) + 2) // 3)


def test_a_checkpoint_writes_pending_and_learned_features_packed() -> None:
    """What a partition writes: each pending record's and learned label's features as text
    of 8 bytes a number (base64), not a JSON array of numbers, and a restore of it gives the
    same memories (the segment tests above restore and compare them in full)."""
    live = Pipeline(CONFIG)
    _go_on(live, _items(60))
    records = dict(encode_changes(live.drain_changes(0)))
    pending = [orjson.loads(v) for k, v in records.items() if k.startswith(b"p:") and v]
    learned = [row for k, v in records.items() if k.startswith(b"L:") and v
               for row in orjson.loads(v).values()]
    assert pending and learned
    width = len(live.partitions[0].features.feature_names)
    for features in [row[3] for row in pending] + [row[5] for row in learned]:
        assert isinstance(features, str) and len(b64decode(features)) == 8 * width
