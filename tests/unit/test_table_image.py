"""Table images (features/merchant_table.py `TableImage`, pipeline `export_merchants` /
`load_merchants`): a rebuild that loads an image and folds only what came after it scores
exactly as a scorer that never stopped, without relearning the labels before it."""

from __future__ import annotations

import math
import pickle
import random
from array import array
from dataclasses import replace

import pytest
from keys_support import KEY
from test_merchant_table import PRIOR, _events
from test_shared_model import PARTITIONS, _Heads, _items, _one_pipeline, _pipeline, _replay

from stream.contracts.messages import Label, Transaction
from stream.contracts.partitioning import consumed_order, partition_for
from stream.core.features.merchant_table import (
    ImageMismatch,
    MerchantRows,
    MerchantTable,
    TableImage,
)
from stream.core.pipeline import Pipeline
from stream.state.changelog import RestoredState, encode_changes, fold
from stream.state.merchant_feed import decode_feed, encode_feed
from stream.state.snapshot import SnapshotError, StateAuthenticationError
from stream.state.table_image import decode_table_image, encode_table_image


def _feed_in_order(tables: list[MerchantTable], events: list) -> None:
    """Add each event and move its partition's watermark to it (events eff-sorted)."""
    for eff, p, seq, merchant, kind, value in events:
        for table in tables:
            table.add(p, seq, eff, merchant, kind, value)
            table.watermark(p, eff)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_loaded_image_continues_as_the_table_it_was_taken_from(seed: int) -> None:
    events = sorted(_events(seed, 3000, partitions=4), key=lambda e: (e[0], e[1], e[2]))
    cut = len(events) // 2
    live = MerchantTable(4, PRIOR, delta_s=60.0)
    _feed_in_order([live], events[:cut])
    horizon = events[cut - 200][0]
    live.release(horizon)
    loaded = MerchantTable(4, PRIOR, delta_s=60.0)
    loaded.load(live.image())
    assert len(loaded) == len(live) and loaded.copies == live.copies and loaded.copies > 0
    _feed_in_order([live, loaded], events[cut:])
    for table in (live, loaded):
        for p in range(4):
            table.watermark(p, math.inf)
    rng = random.Random(seed)
    for _ in range(300):
        merchant, cutoff = f"m{rng.randrange(8)}", rng.uniform(horizon, 30 * 86400.0)
        a: dict[str, float] = {}
        b: dict[str, float] = {}
        assert live.read(merchant, cutoff, cutoff + 60.0, a)
        assert loaded.read(merchant, cutoff, cutoff + 60.0, b)
        assert a == b  # bit for bit, reads behind the old frontier included
    assert live.folded == loaded.folded == len(events)


def test_an_image_of_other_parameters_is_refused_and_changes_nothing() -> None:
    source = MerchantTable(2, PRIOR, delta_s=60.0)
    source.add(0, 1, 100.0, "m1", 0, 0.0)
    source.watermark(0, 200.0)
    source.watermark(1, 200.0)
    target = MerchantTable(2, PRIOR, delta_s=60.0, ttl_s=86400.0)
    target.add(0, 1, 50.0, "m2", 0, 0.0)
    with pytest.raises(ImageMismatch, match="ttl_s"):
        target.load(source.image())
    assert target.waiting == 1 and len(target) == 0
    image = source.image()
    assert isinstance(image.merchants, MerchantRows)
    image.merchants.rows.append(0.0)  # rows one value too long
    with pytest.raises(ImageMismatch, match="values per merchant"):
        MerchantTable(2, PRIOR, delta_s=60.0).load(image)


def test_an_image_taken_under_a_shorter_delta_loads_and_counts_what_it_cannot_answer() -> None:
    """The fold does not depend on delta, only how far back the copies reach: refusing the
    image after a change of `merchant_delta_s` would fold the whole feed again (up to its 90
    days). Reads the image's copies cover are exact; earlier ones are counted stale."""
    events = [(float(t), t % 2, t, f"m{t % 3}", t % 4 // 3, 1.0) for t in range(0, 1000, 5)]
    source = MerchantTable(2, PRIOR, delta_s=60.0)
    for eff, p, seq, merchant, kind, value in events:
        source.add(p, seq, eff, merchant, kind, value)
    source.watermark(0, 1000.0)
    source.watermark(1, 1000.0)
    source.release(900.0)
    target = MerchantTable(2, PRIOR, delta_s=300.0)
    target.load(source.image())
    out: dict[str, float] = {}
    for cutoff in (900.0, 950.0, 1000.0):
        assert target.read("m1", cutoff, cutoff + 60.0, out)
        assert out == _batch_read(events, "m1", cutoff, cutoff + 60.0)
    assert not target.read("m1", 700.0, 760.0, out)  # its copies went before the image
    assert target.stale_reads == 1


def _batch_read(events: list[tuple[float, int, int, str, int, float]], merchant: str,
                cutoff: float, t: float) -> dict[str, float]:
    table = MerchantTable(2, PRIOR)
    for eff, p, seq, name, kind, value in events:
        if eff < cutoff:
            table.add(p, seq, eff, name, kind, value)
    table.watermark(0, math.inf)
    table.watermark(1, math.inf)
    out: dict[str, float] = {}
    table.read(merchant, cutoff, t, out)
    return out


def _exchange(owner: dict[int, Pipeline]) -> None:
    """Every outstanding feed record to the other instance, through the feed's JSON."""
    for p, pipe in owner.items():
        drained = pipe.drain_feed(p)
        if drained is None:
            continue
        record = decode_feed(encode_feed(*drained))
        for other in {*owner.values()} - {pipe}:
            other.apply_feed(p, record.first_seq, record.events, record.mark,
                             record.stream_time)


LAG_S = 20.0
"""How far B runs behind A in event time: within what the merchant reads allow (lateness 30
s), and enough that B's reads need older state copies than A's own reads do."""
TIDY = {"evict_every": 1}  # release copies and evict often, as a long run does


def _lagged(items: list[Transaction | Label],
            lag_s: float) -> list[tuple[int, Transaction | Label]]:
    """The order one scorer owning all partitions processes them, with partitions 2 and 3
    (B's) each record `lag_s` of event time later; every partition keeps its own order."""
    keyed, latest = [], -math.inf
    for i, (p, item) in enumerate(consumed_order(items, PARTITIONS)):
        latest = max(latest, item.timestamp)
        keyed.append((latest + (lag_s if p >= 2 else 0.0), i, p, item))
    return [(p, item) for _, _, p, item in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _restart_b_from_an_image(items: list[Transaction | Label], cut: int,
                             taken_by: str) -> tuple[dict[str, float], Pipeline, Pipeline]:
    """Instances A (partitions 0, 1) and B (2, 3, running `LAG_S` behind) exchange their
    feeds before each record; at record `cut`, B checkpoints (its changelog rows) and is
    replaced by a new instance that loads the table image `taken_by` one of them and
    restores B's partitions from the changelog, then goes on. Returns every score, A and
    the new instance."""
    a, b = _pipeline(0, **TIDY), _pipeline(2, **TIDY)
    owner = {0: a, 1: a, 2: b, 3: b}
    for p, pipe in owner.items():
        pipe.assign(p)

    def before_each(n: int, heads: _Heads) -> None:
        _exchange(owner)
        if n != cut:
            return
        old = owner[2]
        restored = {q: RestoredState() for q in (2, 3)}
        for q in (2, 3):
            for key, value in encode_changes(old.drain_changes(q)):
                fold(restored[q], key, value)
        image = (a if taken_by == "a" else old).export_merchants()
        new = _pipeline(2, **TIDY)
        new.load_merchants(image)
        for q in (2, 3):
            new.restore_from_changelog(q, restored[q])
            new.lookahead(q, heads.head(q))
            owner[q] = new

    scores = _replay(items, owner, before_each, _lagged(items, LAG_S))
    return scores, a, owner[2]


@pytest.mark.parametrize("taken_by", ["a", "b"])
def test_an_instance_restarted_from_a_table_image_scores_as_one_that_never_stopped(
        taken_by: str) -> None:
    """The image is exact for any partition restored from a checkpoint at or after it,
    whichever instance took it: each instance keeps the state copies that the slowest
    partition's reads need, the other instances' partitions included."""
    rng = random.Random(7)
    items = [replace(i, timestamp=i.timestamp - rng.uniform(0.0, 25.0))  # late, as it comes
             if isinstance(i, Transaction) else i for i in _items()]
    expected = _one_pipeline(items, **TIDY)
    got, a, restarted = _restart_b_from_an_image(items, cut=4000, taken_by=taken_by)
    assert got == expected
    # Nothing before the cut reached the new instance but the image (no feed is read again
    # here), and its champion learned what A's did.
    assert a.timeline is not None and restarted.timeline is not None
    assert restarted.timeline.learned == a.timeline.learned > 2900


def test_an_instance_keeps_the_copies_every_partitions_reads_need_not_only_its_own() -> None:
    """What makes an image exact for a partition another instance restarts: A, ahead of B,
    keeps the state copies B's reads can still ask for (a read's cutoff is never before its
    partition's stream time - lateness - delta). Keeping only what A's own partitions need
    would have let A drop them (the restart test above rarely meets such a read: it takes
    input late by nearly the lateness, on B, just after the restart)."""
    items = _items(1500)
    a, b = _pipeline(0, **TIDY), _pipeline(2, **TIDY)
    owner = {0: a, 1: a, 2: b, 3: b}
    for p, pipe in owner.items():
        pipe.assign(p)
    checked = 0
    for n, (p, item) in enumerate(_lagged(items, 25.0)):
        _exchange(owner)
        pipe = owner[p]
        if isinstance(item, Transaction):
            pipe.score(item, p)
        else:
            pipe.learn_label(item)
        if n % 100 == 99:
            table = a.merchants
            assert table is not None
            b_views = [b._views[q] for q in (2, 3)]
            b_reads_from = min(v.stream_time - v.lateness_s for v in b_views) - table.delta_s
            a_reads_from = min(a._views[q].stream_time - 30.0 for q in (0, 1)) - table.delta_s
            assert table.image().horizon <= b_reads_from
            checked += b_reads_from < a_reads_from  # B behind: A's own reads would allow more
    assert checked > 10


def test_an_image_of_another_champion_is_refused_before_anything_changes() -> None:
    image = trained().export_merchants()
    other = trained(model_epoch_s=60.0)
    assert other.merchants is not None and other.timeline is not None
    before = (len(other.merchants), other.merchants.waiting, other.timeline.learned)
    with pytest.raises(ImageMismatch, match="shared champion's image learned"):
        other.load_merchants(image)
    assert (len(other.merchants), other.merchants.waiting, other.timeline.learned) == before
    assert before[0] > 0 and before[2] > 0


def test_an_image_with_unpublished_news_or_other_lateness_is_refused() -> None:
    items = [i for i in _items(200) if isinstance(i, Transaction)]
    pipe = _pipeline(0)
    pipe.assign(0)
    first = next(i for i in items if partition_for(i.card_id.encode(), PARTITIONS) == 0)
    pipe.score(first, 0)
    with pytest.raises(ValueError, match="not yet published"):
        pipe.export_merchants()
    pipe.drain_feed(0)
    image = pipe.export_merchants()
    other = _pipeline(0, merchant_lateness_s=10.0)
    with pytest.raises(ImageMismatch, match="merchant_lateness_s"):
        other.load_merchants(image)
    with pytest.raises(ImageMismatch, match="per partition"):
        Pipeline(replace(pipe.config, model_state="partition")).load_merchants(image)


def trained(count: int = 300, **extra: object) -> Pipeline:
    """One instance owning every partition, `count` transactions and their labels in, its
    news drained (as after a checkpoint's feed records): ready to export an image."""
    pipe = _pipeline(0, **extra)
    for p in range(PARTITIONS):
        pipe.assign(p)
    for p, item in consumed_order(_items(count), PARTITIONS):  # no lookahead: events queue
        if isinstance(item, Transaction):
            pipe.score(item, p)
        else:
            pipe.learn_label(item)
    for p in range(PARTITIONS):
        pipe.drain_feed(p)
    return pipe


def _signed_image() -> tuple[bytes, Pipeline]:
    pipe = trained()
    return encode_table_image(pipe.export_merchants(), KEY), pipe


def test_a_signed_image_round_trips_and_loads_as_its_source() -> None:
    raw, source = _signed_image()
    image = decode_table_image(raw, KEY)
    loaded = _pipeline(0)
    loaded.load_merchants(image)
    assert source.merchants is not None and loaded.merchants is not None
    assert source.timeline is not None and loaded.timeline is not None
    ours, theirs = loaded.merchants.image(), source.merchants.image()
    assert len(ours.merchants) > 10 and ours.queued
    assert (ours.timeline.learner["LogisticRegression"].weights
            == theirs.timeline.learner["LogisticRegression"].weights)
    ours.timeline = theirs.timeline = None  # models compare by identity
    assert ours == theirs
    assert loaded.timeline.learned == source.timeline.learned > 100


def test_an_image_is_authenticated_before_it_is_unpickled_and_checked_after() -> None:
    raw, _ = _signed_image()
    with pytest.raises(StateAuthenticationError, match="no state key"):
        decode_table_image(raw, None)
    with pytest.raises(SnapshotError, match="bad magic"):  # a partition snapshot is not one
        decode_table_image(b"FSNAP" + raw[5:], KEY)
    forged = raw[:-10] + pickle.dumps(("os.system", "id"))[:10]
    with pytest.raises(StateAuthenticationError, match="failed authentication"):
        decode_table_image(forged, KEY)
    image = decode_table_image(raw, KEY)
    image.queued.append((1.0, 0, 1, 9, "m", 0.0))  # a kind no fold knows
    with pytest.raises(SnapshotError, match="queued event"):
        decode_table_image(encode_table_image(image, KEY), KEY)


def _as_listed(image: TableImage) -> TableImage:
    """The image as builds before 2026-12-04 wrote it: each merchant an ``(name, [floats])``,
    each copy an ``(eff, [floats])``."""
    assert isinstance(image.merchants, MerchantRows)
    width = image.merchants.width
    listed = [(m, [(eff, rows[i * width:(i + 1) * width].tolist())
                   for i, eff in enumerate(effs)]) for m, effs, rows in image.copies]
    return replace(image, merchants=list(image.merchants), copies=listed)


def test_an_image_keeps_its_rows_as_arrays_and_reads_the_listed_form_of_older_builds() -> None:
    """At 300 s behind and 2,000 events a second an image holds about 600,000 copies, and a
    busy acquirer a million merchants: as ``(eff, [floats])`` and ``(name, [floats])``
    tuples, taking and encoding one stalled the loop for 2.5 s and 4.3 s. They are arrays
    now, copied (the image is not the live table's), and an image an older build wrote
    loads to the same table."""
    events = sorted(((float(e[0]), *e[1:]) for e in _events(4, 3000, partitions=4)),
                    key=lambda e: (e[0], e[1], e[2]))
    live = MerchantTable(4, PRIOR, delta_s=60.0)
    _feed_in_order([live], events[:2000])
    live.release(events[1800][0])
    image = live.image()
    assert image.copies and all(type(a) is array and a.typecode == "d"
                                for _, effs, rows in image.copies for a in (effs, rows))
    assert isinstance(image.merchants, MerchantRows) and type(image.merchants.rows) is array
    assert list(image.merchants) == [(m, s.tolist()) for m, s in live._state.items()]
    frozen = pickle.dumps(image)
    _feed_in_order([live], events[2000:2100])
    live.release(events[2050][0])
    assert pickle.dumps(image) == frozen  # folding on did not reach into it
    old = decode_table_image(encode_table_image(_as_listed(image), KEY), KEY)
    assert type(old.merchants) is list and type(old.copies[0][1]) is list
    tables = [MerchantTable(4, PRIOR, delta_s=60.0) for _ in range(2)]
    tables[0].load(image)
    tables[1].load(old)
    assert tables[0].copies == tables[1].copies == sum(len(e) for _, e, _ in image.copies)
    assert tables[0].image() == tables[1].image() == image
    rng = random.Random(4)
    for _ in range(200):
        merchant, cutoff = f"m{rng.randrange(8)}", rng.uniform(image.horizon, image.frontier)
        a: dict[str, float] = {}
        b: dict[str, float] = {}
        assert tables[0].read(merchant, cutoff, cutoff, a)
        assert tables[1].read(merchant, cutoff, cutoff, b)
        assert a == b


def test_rows_of_the_wrong_type_or_length_are_refused_with_a_reason() -> None:
    events = sorted(((float(e[0]), *e[1:]) for e in _events(5, 500, partitions=4)),
                    key=lambda e: (e[0], e[1], e[2]))
    table = MerchantTable(4, PRIOR, delta_s=60.0)
    _feed_in_order([table], events)
    image = table.image()
    m, effs, rows = image.copies[0]
    for bad in ((m, effs, array("f", rows)), (m, effs.tolist(), rows), (m, effs)):
        wrong = replace(image, copies=[bad, *image.copies[1:]])
        with pytest.raises(SnapshotError, match="state copy"):
            decode_table_image(encode_table_image(wrong, KEY), KEY)
    assert isinstance(image.merchants, MerchantRows)
    names, states = image.merchants.names, image.merchants.rows
    for bad_rows in (MerchantRows([*names[:-1], 7], states),  # type: ignore[list-item]
                     MerchantRows(names, array("f", states))):
        wrong = replace(image, merchants=bad_rows)
        with pytest.raises(SnapshotError, match="merchant rows"):
            decode_table_image(encode_table_image(wrong, KEY), KEY)
    short = replace(image, copies=[(m, effs, rows[:-1]), *image.copies[1:]])
    with pytest.raises(ImageMismatch, match="values per merchant"):
        MerchantTable(4, PRIOR, delta_s=60.0).load(short)
    listed = _as_listed(image)
    listed.copies[0][1][0][1].append(0.0)  # one listed state a value too wide
    with pytest.raises(ImageMismatch, match="values per merchant"):
        MerchantTable(4, PRIOR, delta_s=60.0).load(listed)
