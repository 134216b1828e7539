"""The shared merchant table: as-of reads equal a batch recomputation over the events before
the cutoff, whatever order events and watermarks arrive in; stale reads are counted."""

from __future__ import annotations

import math
import random
import sys
import tracemalloc
from array import array

import pytest

from stream.core.features import merchant as merchant_state
from stream.core.features.merchant_table import LABEL, TX, MerchantTable, TableView

PRIOR = (1.0, 99.0)


def _events(seed: int, n: int, partitions: int) -> list[tuple[float, int, int, str, int, float]]:
    """(eff, partition, seq, merchant, kind, value), seq increasing per partition."""
    rng = random.Random(seed)
    seqs = [0] * partitions
    out = []
    for _ in range(n):
        p = rng.randrange(partitions)
        seqs[p] += 1
        kind = TX if rng.random() < 0.7 else LABEL
        out.append((round(rng.uniform(0.0, 30 * 86400.0)), p, seqs[p], f"m{rng.randrange(8)}",
                    kind, float(rng.random() < 0.1)))
    return out


def _batch(events: list[tuple[float, int, int, str, int, float]], merchant: str, cutoff: float,
           t: float) -> dict[str, float]:
    """Fold the merchant's events with eff < cutoff in canonical order, from scratch."""
    m = array("d", [0.0] * merchant_state.WIDTH)
    for eff, _, _, name, kind, value in sorted(events, key=lambda e: (e[0], e[1], e[2])):
        if name != merchant or eff >= cutoff:
            continue
        if kind == TX:
            merchant_state.add_transaction(m, eff)
        else:
            merchant_state.add_label(m, value != 0.0, eff)
    out: dict[str, float] = {}
    merchant_state.features(m, t, PRIOR, out)
    return out


def _fill(table: MerchantTable, events: list, order: random.Random) -> None:
    """Add the events in a shuffled order that keeps each partition's own order, moving each
    partition's watermark to its last event's eff (events are eff-sorted per partition)."""
    by_partition: dict[int, list] = {}
    for e in sorted(events, key=lambda e: (e[1], e[0], e[2])):
        by_partition.setdefault(e[1], []).append(e)
    cursors = dict.fromkeys(by_partition, 0)
    while cursors:
        p = order.choice(sorted(cursors))
        eff, _, seq, merchant, kind, value = by_partition[p][cursors[p]]
        table.add(p, seq, eff, merchant, kind, value)
        table.watermark(p, eff)
        cursors[p] += 1
        if cursors[p] == len(by_partition[p]):
            del cursors[p]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reads_behind_the_frontier_equal_the_batch_fold_in_any_arrival_order(seed: int) -> None:
    events = _events(seed, 3000, partitions=4)
    rng = random.Random(seed)
    probes = [(f"m{rng.randrange(8)}", rng.uniform(0.0, 30 * 86400.0)) for _ in range(200)]
    results = []
    for arrival in range(3):
        table = MerchantTable(4, PRIOR, delta_s=60.0)
        _fill(table, events, random.Random(100 + arrival))
        for p in range(4):
            table.watermark(p, math.inf)
        got = []
        for merchant, cutoff in probes:
            out: dict[str, float] = {}
            assert table.read(merchant, cutoff, cutoff + 60.0, out)
            got.append(out)
        results.append(got)
    assert results[0] == results[1] == results[2]  # bit for bit, whatever the arrival order
    for (merchant, cutoff), out in zip(probes, results[0], strict=True):
        want = _batch(events, merchant, cutoff, cutoff + 60.0)
        for name, value in want.items():
            assert math.isclose(out[name], value, rel_tol=1e-9, abs_tol=1e-12), name


def test_a_read_past_the_frontier_is_stale_and_counted() -> None:
    table = MerchantTable(2, PRIOR, delta_s=60.0)
    table.add(0, 1, 100.0, "m", TX, 0.0)
    table.watermark(0, 500.0)  # partition 1 has promised nothing yet
    out: dict[str, float] = {}
    assert not table.read("m", 200.0, 260.0, out)
    assert out["merchant_count_1d"] == 0.0 and table.stale_reads == 1 and table.waiting == 1
    table.watermark(1, 150.0)
    assert table.read("m", 150.0, 260.0, out) and out["merchant_count_1d"] > 0.99


def test_views_give_late_input_the_floor_and_never_wait_for_their_own_partition() -> None:
    table = MerchantTable(1, PRIOR, delta_s=60.0)
    view = TableView(table, 0, lateness_s=30.0)
    out: dict[str, float] = {}
    view.read("m", 1000.0, out)
    view.transaction("m", 1000.0)
    view.read("m", 2000.0, out)  # its own watermark moved to 1970 first: exact
    assert table.stale_reads == 0 and out["merchant_count_1d"] > 0.98
    view.transaction("m", 2000.0)
    view.label("m", True, 10.0)  # far behind: counts at 2000 - 30
    table.watermark(0, math.inf)
    assert table.read("m", 1971.0, 1971.0, out) and out["merchant_labelled_log"] > 0
    assert table.read("m", 1970.0, 1970.0, out) and out["merchant_labelled_log"] == 0
    with pytest.raises(ValueError):
        TableView(table, 0, lateness_s=61.0)


def test_released_copies_and_idle_merchants_go() -> None:
    table = MerchantTable(1, PRIOR, delta_s=60.0, ttl_s=1000.0)
    for i in range(100):
        table.add(0, i, float(i), f"m{i % 5}", TX, 0.0)
    table.watermark(0, 100.0)
    assert table.copies == 100
    table.release(50.0)
    assert table.copies == 50
    out: dict[str, float] = {}
    table.read("m0", 75.0, 75.0, out)  # still exact behind the frontier, from a copy
    assert math.isclose(out["merchant_count_1d"],
                        _batch([(float(i), 0, i, f"m{i % 5}", TX, 0.0) for i in range(100)],
                               "m0", 75.0, 75.0)["merchant_count_1d"])
    assert table.evict(1097.5) == 3 and len(table) == 2  # m3 (last 98) and m4 (99) stay


def test_a_state_copy_costs_its_floats_not_five_objects() -> None:
    """A copy is kept for every event folded within the readers' horizon (about 120,000 at
    2,000 events a second with a 60 s delta): as an `(eff, array)` tuple in a list with an
    `(eff, merchant)` entry in the fold order, each took about 420 bytes; the flat rows take
    14 floats and a list slot. Reads behind the frontier stay exact."""
    table = MerchantTable(1, PRIOR, delta_s=60.0)
    merchants = [f"m{i}" for i in range(100)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):  # folded one at a time: the queue stays empty
            table.add(0, i, float(i), merchants[i * 7 % 100], TX if i % 3 else LABEL, 1.0)
            table.watermark(0, float(i + 1))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert table.copies == 20_000
    assert grown / table.copies < 160
    events = [(float(i), 0, i, merchants[i * 7 % 100], TX if i % 3 else LABEL, 1.0)
              for i in range(20_000)]
    out: dict[str, float] = {}
    for merchant, cutoff in (("m0", 50.0), ("m7", 9_999.5), ("m42", 19_990.0)):
        assert table.read(merchant, cutoff, cutoff + 5.0, out)
        assert out == _batch(events, merchant, cutoff, cutoff + 5.0)
    table.release(10_000.0)
    assert table.copies == 10_000
    assert table.read("m7", 10_000.5, 10_010.0, out)
    assert out == _batch(events, "m7", 10_000.5, 10_010.0)


def test_the_local_floor_moves_the_frontier_only_for_records_processed_in_order() -> None:
    """Processing a record at t in event-time order puts every local partition past
    t - lateness, idle ones included; records released after giving up the order do not."""
    table = MerchantTable(2, PRIOR, delta_s=60.0)
    busy = TableView(table, 0, lateness_s=30.0)
    TableView(table, 1, lateness_s=30.0)  # idle: never emits, never looks ahead
    table.ordered = False
    busy.transaction("m", 1000.0)
    assert table.frontier == -math.inf
    table.ordered = True
    busy.transaction("m", 1010.0)
    assert table.frontier == 980.0


def test_a_partition_that_leaves_keeps_the_floor_as_its_watermark() -> None:
    table = MerchantTable(2, PRIOR, delta_s=60.0)
    view = TableView(table, 0, lateness_s=30.0)
    view.transaction("m", 1000.0)
    table.set_local({0})  # partition 1 is another instance's now: the frontier waits for it
    assert table.frontier == 970.0 and table.remote_frontier() == 970.0
    view.transaction("m", 2000.0)
    assert table.frontier == 970.0
    TableView(table, 1, lateness_s=30.0).apply(1, [], 1900.0, 1930.0)
    assert table.frontier == 1900.0


def test_a_queued_example_is_compact_and_an_image_keeps_its_format() -> None:
    """Examples wait in the table's queue, during a rebuild most of the feed at once: as a
    tuple of 32 floats one took about 1,060 bytes; an array takes 336. The image keeps
    writing them as tuples, the format images had before, and a load makes arrays again."""
    table = MerchantTable(partitions=2)
    view = TableView(table, 0, feed=True)
    view.learn([0.5] * 31, True, 1000.0)
    (_, _, _, _, _, example), = table._heap
    assert type(example) is array and example[0] == 1.0 and len(example) == 32
    assert sys.getsizeof(example) <= 340
    image = table.image()
    assert type(image.queued[0][5]) is tuple
    copy = MerchantTable(partitions=2)
    copy.load(image)
    assert copy._heap == table._heap and type(copy._heap[0][5]) is array


def test_a_pipeline_drops_the_tables_old_copies_as_it_goes() -> None:
    """The copies a read can no longer ask for go every `TIDY_EVERY` events of a partition,
    a few at a time: released once per `evict_every` (10,000) events, a release dropped
    every copy since the last one at once, a 50-80 ms stall."""
    from stream.contracts.messages import Transaction
    from stream.core.pipeline import TIDY_EVERY, Pipeline, PipelineConfig

    config = PipelineConfig(merchant_delta_s=60.0, merchant_lateness_s=30.0)
    pipe = Pipeline(config, merchant_partitions=2)
    most = 0
    for i in range(3000):  # one event a second on each partition, over ten merchants
        pipe.score(Transaction(f"t{i}", f"c{i % 7}", f"m{i % 10}", 10.0, 1e9 + i / 2, None),
                   i % 2)
        assert pipe.merchants is not None
        most = max(most, pipe.merchants.copies)
    # Readable: the last delta + lateness (90 s: 180 events), plus up to TIDY_EVERY events
    # of each partition since its last release.
    assert 0 < most <= 180 + 2 * TIDY_EVERY


@pytest.mark.parametrize("seed", [4, 5])
def test_reads_at_the_horizon_stay_exact_while_copies_go_as_the_clock_moves(seed: int) -> None:
    """Released as a scorer releases them (every few events, the horizon at the slowest
    partition's watermark minus delta), over enough copies that the fold order's consumed
    front is cut off many times: every read between the horizon and the frontier still
    equals the batch fold, and no more copies are kept than events within the horizon."""
    rng = random.Random(seed)
    delta = 40.0
    table = MerchantTable(2, PRIOR, delta_s=delta)
    clocks, seqs, events = [0.0, 0.0], [0, 0], []
    for i in range(8000):
        p = rng.randrange(2)
        clocks[p] += rng.expovariate(1.0)
        seqs[p] += 1
        kind = TX if rng.random() < 0.8 else LABEL
        event = (clocks[p], p, seqs[p], f"m{rng.randrange(12)}", kind, float(rng.random() < 0.1))
        events.append(event)
        table.add(p, seqs[p], event[0], event[3], kind, event[5])
        table.watermark(p, clocks[p])
        if i >= 100 and i % 7 == 0:  # both partitions have promised a time
            horizon = min(clocks) - delta
            table.release(horizon)
            assert table.copies <= sum(e[0] >= horizon for e in events)
            merchant = f"m{rng.randrange(12)}"
            cutoff = rng.uniform(horizon, min(clocks))
            out: dict[str, float] = {}
            assert table.read(merchant, cutoff, cutoff, out)
            for name, value in _batch(events, merchant, cutoff, cutoff).items():
                assert math.isclose(out[name], value, rel_tol=1e-9, abs_tol=1e-12), name
    assert table.stale_reads == 0
