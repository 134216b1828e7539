"""Event-time order on the live path: decoded records leave in event-time order across topics
and partitions, whatever the fetch order, with bounded memory."""

from __future__ import annotations

import math
import random

import orjson

from stream.contracts.codec import DecodeError
from stream.kafka.records import Polled, Record, Source
from stream.kafka.testing import MemoryConsumer
from stream.serving.intake import Intake


def batch(*items: Record | Source) -> Polled:
    """One poll: records, then the partitions found at their end (a Source in the list)."""
    return Polled([i for i in items if isinstance(i, Record)],
                  [i for i in items if not isinstance(i, Record)])


def eof(topic: str, partition: int) -> Source:
    return (topic, partition)


def tx(i: int, ms: int, partition: int) -> Record:
    body = {"transaction_id": f"t{i}", "card_id": "c", "merchant_id": "m", "amount": 1.0,
            "timestamp": ms}
    return Record("tx", partition, i, b"c", orjson.dumps(body))


def label(i: int, ms: int, partition: int) -> Record:
    body = {"transaction_id": f"t{i}", "card_id": "c", "is_fraud": False, "timestamp": ms}
    return Record("labels", partition, i, b"c", orjson.dumps(body))


def make(consumer: MemoryConsumer | None = None, pause_above: int = 10_000) -> Intake:
    intake = Intake(consumer or MemoryConsumer(), "tx", "labels", max_wait_s=1e9,
                    pause_above=pause_above, clock=lambda: 0.0)
    intake.track([("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)])
    return intake


def test_a_backlog_leaves_in_event_time_order_whatever_the_fetch_order() -> None:
    """Labels a week behind their transactions, fetched far ahead of them, in random chunks:
    every label still leaves after every transaction that happened before it."""
    week = 7 * 86_400_000
    for seed in range(10):
        rng = random.Random(seed)
        sources: dict[tuple[str, int], list[Record]] = {}
        for p in (0, 1):
            times = sorted(rng.randrange(0, 3 * week) for _ in range(200))
            sources[("tx", p)] = [tx(i, ms, p) for i, ms in enumerate(times)]
            sources[("labels", p)] = [label(i, ms + week, p) for i, ms in enumerate(times)]
        intake = make()
        cursor = dict.fromkeys(sources, 0)
        out = []
        while any(cursor[s] < len(sources[s]) for s in sources):
            source = rng.choice([s for s in sources if cursor[s] < len(sources[s])])
            take = rng.randint(1, 60)
            chunk: list[Record | Source] = list(sources[source][cursor[source]:
                                                               cursor[source] + take])
            cursor[source] += len(chunk)
            if cursor[source] == len(sources[source]):
                chunk.append(eof(*source))  # the fetch that reached the end says so
            intake.take(batch(*chunk))
            out.extend(intake.release())
        assert len(intake) == 0
        times = [a.time for a in out]
        assert times == sorted(times) and len(out) == 800
        assert intake.timed_out == 0


def test_equal_times_leave_transactions_first_then_by_partition() -> None:
    intake = make()
    intake.take(batch(label(0, 5000, 1), label(1, 5000, 0), tx(2, 5000, 1), tx(3, 5000, 0),
                 eof("tx", 0), eof("tx", 1), eof("labels", 0), eof("labels", 1)))
    order = [(a.record.topic, a.record.partition) for a in intake.release()]
    assert order == [("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)]


def test_an_empty_partition_not_at_its_end_holds_later_records_back() -> None:
    intake = make()
    intake.take(batch(tx(0, 1000, 0), eof("tx", 1), eof("labels", 0)))
    assert intake.release() == []  # labels[1] may still bring something earlier
    intake.take(batch(eof("labels", 1)))
    assert [a.time for a in intake.release()] == [1.0]


def test_a_source_is_caught_up_only_until_its_next_record() -> None:
    intake = make()
    intake.take(batch(eof("tx", 0), eof("tx", 1), eof("labels", 0), eof("labels", 1)))
    intake.take(batch(label(0, 9000, 0)))
    assert [a.time for a in intake.release()] == [9.0]  # labels[0] drained, others at end
    intake.take(batch(tx(1, 2000, 1)))
    # labels[0] delivered a record since its end-of-partition event: it is waited for again
    assert intake.release() == []


def test_undecodable_records_leave_as_soon_as_they_head_their_partition() -> None:
    intake = make()
    intake.take(batch(tx(0, 1000, 0), Record("tx", 0, 1, None, b"{not json"),
                      Record("labels", 0, 0, None, None),
                 eof("tx", 0), eof("tx", 1), eof("labels", 0), eof("labels", 1)))
    out = intake.release()
    kinds = [type(a.item).__name__ for a in out]
    # Offset order within a partition is kept: tx[0]'s bad record waits behind its good one.
    assert kinds == ["DecodeError", "Transaction", "DecodeError"]
    errors = [a for a in out if isinstance(a.item, DecodeError)]
    assert all(a.time == -math.inf for a in errors)
    assert {a.item.reason for a in errors if isinstance(a.item, DecodeError)} == {"invalid_json"}


def test_a_partition_far_ahead_is_paused_and_resumed_once_drained() -> None:
    consumer = MemoryConsumer()
    intake = make(consumer, pause_above=10)
    intake.take(batch(*[label(i, 100_000 + i, 0) for i in range(12)]))
    assert consumer.paused == {("labels", 0)}
    intake.take(batch(*[tx(i, 200_000 + i, 0) for i in range(5)]))
    intake.take(batch(eof("tx", 1), eof("labels", 1)))
    # tx[0] holds 200 s: the 12 labels (100 s) leave, and labels[0] is resumed
    assert len(intake.release()) == 12 and consumer.paused == set()


def test_revoked_partitions_lose_what_they_held() -> None:
    intake = make()
    intake.take(batch(tx(0, 1000, 0), tx(1, 2000, 1)))
    intake.revoke([("tx", 0), ("labels", 0)])
    intake.take(batch(eof("tx", 1), eof("labels", 1)))
    assert [a.record.partition for a in intake.release()] == [1]


def test_a_paused_partition_given_straight_back_by_a_rebalance_is_fetched_again() -> None:
    """An eager rebalance revokes every partition and gives most straight back; a client may
    keep their pauses through it (both clients do, as MemoryConsumer does). The intake
    forgot its pauses at revocation without lifting them, so such a partition was never
    fetched again."""
    consumer = MemoryConsumer()
    intake = make(consumer, pause_above=2)
    intake.take(batch(*[tx(i, 1000 + i, 0) for i in range(5)]))
    assert consumer.paused == {("tx", 0)}
    everything = [("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)]
    intake.revoke(everything)
    intake.track(everything)
    assert consumer.paused == set()
    intake.take(batch(*[tx(i, 1000 + i, 0) for i in range(5)]))  # paused again when due
    assert consumer.paused == {("tx", 0)}


def test_a_rewind_clears_everything_and_lifts_pauses() -> None:
    consumer = MemoryConsumer()
    intake = make(consumer, pause_above=2)
    intake.take(batch(*[tx(i, 1000 + i, 0) for i in range(5)]))
    assert consumer.paused == {("tx", 0)}
    intake.clear()
    assert len(intake) == 0 and consumer.paused == set()


def test_event_times_out_of_bounds_are_dead_letters_and_move_no_clock() -> None:
    """A year-9999 event used to move its partition's clock there for good (eviction then
    wiped the card state) and was approved; seconds sent as milliseconds landed in 1970."""
    from stream.contracts.codec import TimeBounds
    from stream.core.pipeline import Pipeline, PipelineConfig

    now, record_ms, week = 1_795_687_260.0, 1_795_687_200_000, 7 * 86400.0
    intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=0.0, clock=lambda: 0.0,
                    bounds=TimeBounds(week, 3650 * 86400.0), wall_clock=lambda: now)
    intake.track([("tx", 0)])

    def at(i: int, timestamp: object) -> Record:
        body = {"transaction_id": f"t{i}", "card_id": f"c{i % 3}", "merchant_id": "m",
                "amount": 10.0, "timestamp": timestamp}
        return Record("tx", 0, i, b"c", orjson.dumps(body), record_ms)

    records = [at(i, record_ms + i * 1000) for i in range(6)]
    records[2] = at(2, "9999-12-31T23:59:59Z")
    records[3] = at(3, 1_795_687_200)  # epoch seconds
    records[4] = at(4, "0001-01-01T00:00:00Z")
    intake.take(Polled(records, at_end=[("tx", 0)]))
    out = intake.release()
    refused = {a.record.offset: a.item.reason for a in out if isinstance(a.item, DecodeError)}
    assert refused == {2: "timestamp_out_of_range", 3: "timestamp_out_of_range",
                       4: "timestamp_out_of_range"}
    assert all(a.time == -math.inf for a in out if a.record.offset in refused)

    pipeline = Pipeline(PipelineConfig(evict_every=1))
    for arrival in out:
        if not isinstance(arrival.item, DecodeError):
            pipeline.score(arrival.item, 0)
    assert pipeline.clock <= now + week and pipeline.partitions[0].clock <= now + week
    assert pipeline.partitions[0].features.n_cards == 3  # nothing evicted


def test_without_bounds_the_intake_checks_no_event_time() -> None:
    intake = make()
    intake.take(batch(tx(0, 253_402_300_799_999, 0), eof("tx", 0), eof("tx", 1),
                      eof("labels", 0), eof("labels", 1)))
    assert [a.time for a in intake.release()] == [253_402_300_799.999]


def test_time_spent_between_polls_is_not_time_waited_for_a_source() -> None:
    """A slow machine spent more than `max_task_idle_ms` processing and checkpointing between
    two polls; the wall-clock wait then ran out for a transactions partition that had not even
    been polled again, and its labels left ahead of earlier transactions (93,793 records in
    `make quality`'s Kafka check). Only time spent polling counts as waiting."""
    wall = [0.0]

    class TimedConsumer(MemoryConsumer):
        def poll(self, max_records: int, timeout_s: float) -> Polled:
            wall[0] += 0.01  # a poll that finds the next records already fetched
            return super().poll(max_records, timeout_s)

    day = 86_400_000
    consumer = TimedConsumer([
        batch(tx(0, 1 * day, 0), label(0, 8 * day, 0)),  # the tx source empties at once
        batch(),  # polls while the next tx fetch is in flight
        batch(),
        batch(tx(1, 2 * day, 0), eof("tx", 0), eof("labels", 0)),
    ])
    intake = Intake(consumer, "tx", "labels", max_wait_s=2.0, clock=lambda: wall[0])
    intake.track([("tx", 0), ("labels", 0)])
    out: list[tuple[str, int]] = []
    for _ in range(4):
        intake.poll(500, 0.1)
        out += [(a.record.topic, a.record.offset) for a in intake.release()]
        wall[0] += 5.0  # processing, a checkpoint and a GC pause: longer than the wait
    assert out == [("tx", 0), ("tx", 1), ("labels", 0)]
    assert intake.timed_out == 0


def cut(*items: Record | Source) -> Polled:
    """A poll cut at its `max_records`: the client may hold more behind it."""
    polled = batch(*items)
    polled.more = True
    return polled


def all_at_end() -> Polled:
    return batch(eof("tx", 0), eof("tx", 1), eof("labels", 0), eof("labels", 1))


def test_a_burst_on_partitions_at_their_end_waits_for_what_the_client_still_holds() -> None:
    """Every partition at its end, then a burst lands on all of them (a producer transaction
    committing a backlog): the first poll, cut at `max_records`, holds one partition's
    records, the rest wait in the client. The ends reported before the burst must not let
    those records go ahead of the others': they did, and one `stream run` scored 3,798 of
    4,000 such transactions unlike an in-process replay (serving/intake.py)."""
    intake = make()
    intake.take(all_at_end())
    assert intake.release() == []
    intake.take(cut(tx(0, 9_000, 0), tx(1, 10_000, 0)))
    assert intake.release() == []  # labels and tx 1 may hold earlier records
    intake.take(batch(label(2, 5_000, 0), tx(3, 7_000, 1), label(4, 8_000, 1),
                      eof("tx", 0), eof("tx", 1), eof("labels", 0), eof("labels", 1)))
    assert [a.time for a in intake.release()] == [5.0, 7.0, 8.0, 9.0, 10.0]
    assert intake.timed_out == 0


class Slow(MemoryConsumer):
    """Hands out the queued polls, each taking `step` seconds of the clock `now`."""

    def __init__(self, now: list[float], step: float, polls: list[Polled]) -> None:
        super().__init__(polls)
        self.now, self.step = now, step

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        self.now[0] += self.step
        return super().poll(max_records, timeout_s)


def test_a_burst_doubts_the_old_ends_until_the_client_had_time_to_fetch_everything() -> None:
    """Polls that are not cut, or find nothing, do not settle the doubt at once: a
    transaction's records become readable partition by partition, so the others' may come
    in the next fetch. `settle_s` (0.2 s) of wall-clock time with no poll cut does, spent
    polling or not (the client fetches while the scorer works; at 2,000 events/s the polls
    hardly wait): the partitions that brought nothing are at their end after all."""
    now = [0.0]
    consumer = MemoryConsumer([all_at_end(), cut(tx(0, 9_000, 0)),
                               batch(tx(1, 10_000, 0), eof("tx", 0)), Polled(), Polled()])
    intake = Intake(consumer, "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)])
    intake.poll(500, 0.0)
    assert intake.release() == [] and intake.next_time(1) is None  # at its end
    for _ in range(3):  # the cut poll, then 0.15 s since, processing between the polls
        intake.poll(500, 0.0)
        assert intake.release() == [] and intake.next_time(1) == -math.inf
        now[0] += 0.075
    now[0] += 0.05
    intake.poll(500, 0.0)
    assert [a.time for a in intake.release()] == [9.0, 10.0] and intake.timed_out == 0
    assert intake.next_time(1) is None  # idle again


def test_a_new_end_settles_a_doubted_partition_at_once() -> None:
    """A doubted partition that brings its share of the burst and reaches its end again."""
    intake = make()
    intake.take(all_at_end())
    intake.take(cut(tx(0, 9_000, 0)))
    intake.take(batch(eof("tx", 0), tx(1, 9_500, 1), eof("tx", 1), label(2, 8_000, 0),
                      eof("labels", 0), label(3, 8_500, 1), eof("labels", 1)))
    assert [a.time for a in intake.release()] == [8.0, 8.5, 9.0, 9.5]


def test_an_end_reported_again_is_no_news() -> None:
    """kafka-python's adapter reports every partition at its end on every poll, from what it
    learned before the burst: the last stable offset it asked for while the producer's
    transaction was open, stale once the commit made the records readable. Counted as news,
    those ends settled every doubt in the very poll that raised it, and the first partition
    handed out went hours ahead of the others (3,890 of 4,000 scores unlike the in-process
    replay, tests/integration/test_shared_merchants.py)."""
    now = [0.0]
    intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)])
    intake.take(all_at_end())
    intake.take(cut(tx(0, 9_000, 0), eof("tx", 1), eof("labels", 0), eof("labels", 1)))
    assert intake.release() == []
    now[0] = 0.1
    intake.take(cut(tx(1, 9_100, 0), eof("tx", 1), eof("labels", 0), eof("labels", 1)))
    assert intake.release() == []  # still handing the burst out: the others may be behind
    intake.take(batch(label(2, 8_000, 0), eof("labels", 0)))
    now[0] = 0.35  # 0.2 s with no poll cut: the client had time to fetch every partition
    intake.take(batch(eof("tx", 0), eof("tx", 1), eof("labels", 1)))
    assert [a.time for a in intake.release()] == [8.0, 9.0, 9.1]
    assert intake.timed_out == 0


def test_records_of_a_partition_not_at_its_end_doubt_nothing() -> None:
    """Catching up on a backlog with one partition idle: full polls of the busy partitions
    do not hold them back behind the idle one's end."""
    intake = make()
    intake.take(batch(eof("tx", 1), eof("labels", 1), tx(0, 1_000, 0), label(1, 2_000, 0)))
    intake.take(cut(tx(2, 3_000, 0), label(3, 4_000, 0)))
    assert [a.time for a in intake.release()] == [1.0, 2.0, 3.0]


def test_a_doubted_end_is_waited_for_afresh_and_holds_if_nothing_comes() -> None:
    """A partition at its end for longer than `max_wait_s` and then doubted is waited for
    from the burst on: its old idle time is no evidence that it holds nothing now. Polled
    `max_wait_s` in vain, its end holds after all: the burst goes on in order (not counted
    as a timeout, and the merchant table's floor stays in force), even while the client
    is still handing it out in cut polls (a long backlog on the other partitions)."""
    now = [0.0]
    consumer = Slow(now, 1.5, [batch(eof("tx", 0), eof("labels", 0)), *[Polled()] * 40,
                               cut(tx(0, 9_000, 0)), cut(tx(1, 9_100, 0)),
                               cut(tx(2, 9_200, 0))])
    intake = Intake(consumer, "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("labels", 0)])
    for _ in range(42):  # a minute at the end of both, then the burst
        intake.poll(500, 0.1)
    assert intake.release() == [] and intake.timed_out == 0
    intake.poll(500, 0.1)  # the client still handing out the burst
    assert intake.release() == [] and intake.timed_out == 0  # 1.5 s into the wait
    intake.poll(500, 0.1)
    assert len(intake.release()) == 3  # 3 s: the end holds
    assert intake.timed_out == 0 and intake.aligned


def test_no_end_is_doubted_when_the_alignment_does_not_wait() -> None:
    """`max_task_idle_ms` = 0: the operator chose latency over order."""
    intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=0.0, clock=lambda: 0.0)
    intake.track([("tx", 0), ("labels", 0)])
    intake.take(batch(eof("tx", 0), eof("labels", 0)))
    intake.take(cut(tx(0, 9_000, 0)))
    assert len(intake.release()) == 1 and intake.timed_out == 0


def test_each_doubt_runs_its_own_max_wait() -> None:
    """A burst that goes on doubting ends as it wakes more partitions: an end doubted late
    in it is waited for `max_wait_s` from its own doubt. The intake once timed every doubt
    from the first, so an end doubted 1.5 s into a 2 s wait was trusted again 0.6 s later,
    while the client could still hold that partition's share of the burst."""
    now = [0.0]
    intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)])
    intake.take(all_at_end())
    intake.take(cut(tx(0, 9_000, 1)))  # doubts tx 0 and both labels partitions, at 0 s
    now[0] = 1.0
    intake.take(cut(tx(5, 8_000, 0), label(1, 9_100, 1), eof("tx", 0)))  # tx 0's new end
    # settles its doubt
    now[0] = 1.5
    intake.take(cut(label(2, 9_200, 0)))  # labels 0 wakes: tx 0's end is doubted again
    now[0] = 2.1
    intake.take(cut(tx(3, 9_300, 1)))
    assert [a.time for a in intake.release()] == [8.0]  # the first doubts ran out; tx 0's
    # has 1.4 s to go
    now[0] = 3.6
    intake.take(cut(tx(4, 9_400, 1)))
    assert [a.time for a in intake.release()] == [9.0, 9.1]  # then labels 1 is empty
    assert intake.timed_out == 0


def test_the_client_holding_nothing_more_settles_a_doubt_after_settle_s() -> None:
    """A scorer behind live traffic: its polls are cut, and one that wakes a partition at its
    end doubts the others' ends, among them labels partitions that nothing is written to.
    Those never reach a new end, and cut polls never leave `settle_s` quiet: each doubt held
    every release for `max_wait_s` (2 s), the scorer fell further behind, and the latency
    phase of `make bench` ran into seconds (docs/benchmark.md). Once `settle_s` has passed,
    the client holding nothing more of a partition (its position at the high watermark of
    its last fetch) settles that doubt; a partition it still holds records of stays
    doubted until its new end."""
    now = [0.0]
    consumer = MemoryConsumer()
    intake = Intake(consumer, "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)])
    intake.take(all_at_end())
    consumer.caught = {("labels", 0): 0, ("labels", 1): 0}  # tx 1's records are fetched
    intake.take(cut(tx(0, 9_000, 0)))  # doubts tx 1 and both labels partitions
    now[0] = 0.15
    intake.take(cut(tx(1, 9_100, 0)))
    assert intake.release() == []  # too soon: the client may not have fetched them yet
    now[0] = 0.2
    intake.take(cut(tx(2, 9_200, 0)))
    assert intake.release() == []  # the labels are proven; tx 1 still has records to hand
    assert intake.doubts == {"fresh_end": 0, "caught_up": 2, "quiet": 0, "expired": 0}
    intake.take(cut(tx(3, 8_000, 1), eof("tx", 1)))
    assert [a.time for a in intake.release()] == [8.0, 9.0, 9.1, 9.2]
    assert intake.doubts == {"fresh_end": 1, "caught_up": 2, "quiet": 0, "expired": 0}
    assert intake.timed_out == 0


def test_a_proven_end_is_doubted_again_only_once_its_high_watermark_moves() -> None:
    """After a doubt proved a labels partition's end, the next cut polls that wake a
    partition do not doubt it again while the client's high watermark for it stands: they
    had held every release `settle_s` each, back to back. A record written to it moves its
    high watermark, and the next burst doubts it again."""
    now = [0.0]
    consumer = MemoryConsumer()
    intake = Intake(consumer, "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("labels", 0)])
    intake.take(batch(eof("tx", 0), eof("labels", 0)))
    consumer.caught = {("tx", 0): 1, ("labels", 0): 7}
    intake.take(cut(tx(0, 9_000, 0)))  # doubts the labels' end
    now[0] = 0.25
    intake.take(cut(tx(1, 9_100, 0), eof("tx", 0)))  # proves it
    assert [a.time for a in intake.release()] == [9.0, 9.1]
    intake.take(cut(tx(2, 9_200, 0)))  # tx 0 wakes again: the labels' end stands
    assert [a.time for a in intake.release()] == [9.2]
    intake.take(batch(eof("tx", 0)))
    consumer.caught = {("tx", 0): 3, ("labels", 0): 8}  # a label was written
    intake.take(cut(tx(3, 9_300, 0)))
    assert intake.release() == []  # the labels may hold an earlier record now
    intake.take(batch(label(7, 9_250, 0), eof("labels", 0)))
    assert [a.time for a in intake.release()] == [9.25, 9.3]
    assert intake.doubts == {"fresh_end": 1, "caught_up": 1, "quiet": 0, "expired": 0}


def test_how_each_doubt_ended_is_counted() -> None:
    """`fraudstream_alignment_doubts_total`: a burst doubts the three other ends; one
    partition reaches a new end, one brings nothing for `max_wait_s` (the doubt expires,
    having held every release that long), and a later burst's doubts settle when no poll
    is cut for `settle_s`."""
    now = [0.0]
    intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
    intake.track([("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)])
    intake.take(all_at_end())
    intake.take(cut(tx(0, 9_000, 0)))  # doubts tx 1 and both labels partitions
    assert intake.doubts == {"fresh_end": 0, "caught_up": 0, "quiet": 0, "expired": 0}
    now[0] = 0.1
    intake.take(cut(label(1, 8_000, 0), eof("labels", 0)))  # labels 0: a new end
    assert intake.doubts == {"fresh_end": 1, "caught_up": 0, "quiet": 0, "expired": 0}
    now[0] = 2.5
    intake.take(cut(tx(2, 9_100, 0)))  # tx 1 and labels 1 brought nothing in 2 s
    assert intake.doubts == {"fresh_end": 1, "caught_up": 0, "quiet": 0, "expired": 2}
    assert [a.time for a in intake.release()] == [8.0, 9.0, 9.1]
    intake.take(batch(eof("tx", 0)))
    intake.take(cut(tx(3, 9_200, 0)))  # tx 0 woke: the others' ends are doubted again
    now[0] = 2.8
    intake.take(batch(eof("tx", 0)))  # 0.3 s with no poll cut: the client had it all
    assert intake.doubts == {"fresh_end": 1, "caught_up": 0, "quiet": 3, "expired": 2}
