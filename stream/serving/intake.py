"""Event-time order on the live path: every consumed record is decoded, held per source
(topic partition) and released across topics and partitions in event-time order.

Why: a transaction's label arrives on another topic, often a week later in event time. A
scorer catching up on a backlog fetches each partition independently, so a labels partition
can run days ahead of its transactions; applied as they come, those labels would teach the
model (and the merchant risk) days before they were known. Merging each polled batch by
timestamp is not enough, because the next poll can bring records older than the last batch.

This is Kafka Streams' record buffer with `max.task.idle.ms`: a source is held back only while
another source is empty, not known to be at its end, and has been waited for less than
`max_wait_s`. Waiting is counted in time spent polling (`Intake.poll`), not wall-clock time:
only a poll can bring the waited-for records, so the time spent processing the batch that
emptied a source, writing a checkpoint or collecting garbage is no evidence that it has
nothing more. On a loaded machine those took more than `max_wait_s` between two polls, and
records left out of event-time order although every source had more to give (93,793 of
771,133 in the Kafka check of `make quality`, with wall-clock waits).

Event time is the record's own `timestamp` field (the one the features use), not
the Kafka record timestamp, which producers stamp with the wall clock. Records that cannot be
decoded have no event time and leave first, to the dead-letter topic; so do records whose
event time is out of bounds (`TimeBounds`: too far after their Kafka record timestamp or the
wall clock, too far before the record timestamp, or epoch seconds sent as milliseconds).
Equal times leave in a fixed order (transactions before labels, then by partition), so a
backlog gives the same order however it was polled: `stream run` and an in-process replay of
the same data agree exactly.

An end of partition is only as fresh as the poll that reported it. A client hands out what it
has fetched in batches of at most `max_records`, and one fetch can bring several partitions'
records: when a burst lands on partitions that were all at their end (an upstream outage's
backlog, a producer transaction committing hours of events), the first poll may hold only
one partition's records while the others' wait in the client behind them, their ends
reported before the burst still standing. Released on those, a whole partition's backlog
went ahead of every label and merchant event of the others: one `stream run` scored 3,798
of 4,000 such transactions unlike an in-process replay of the same data, its shared champion
untrained. So when a poll cut at `max_records` (`Polled.more`) brings records of a partition
that was at its end, the other ends already known are doubted, and waited for afresh
(`max_wait_s`), until a new end of partition for that source (one it was not at before:
the same end reported again is no news, and kafka-python's adapter reports every end on
every poll, including one it asked the broker for while the burst's transaction was still
open: scored that way, 3,890 of 4,000 transactions differed), `settle_s` with no poll cut
(the client has handed out all it had, and had time to fetch every partition again: a
transaction's records do not become readable on all its partitions at once, so one poll
that is not cut, or finds nothing, proves little), or `max_wait_s` in vain (it had
nothing: its end holds, and the order stays assured, as it would have had the burst been
fetched in one poll). These two count wall-clock time, not time spent polling like the
alignment's wait: the client fetches while the scorer works, and with records flowing
the polls hardly wait (counted in polling time, a doubt at 2,000 events/s held every
release for most of a second). A burst on partitions that were not at their end doubts
nothing: a client catching up on a backlog, one partition idle, is not held back; nor is
live traffic, whose polls are not cut until the scorer falls a poll's worth behind.

Once it is behind, though, its polls are cut and wake partitions that were at their end in
turn, and a partition nothing is written to (a `labels` partition, often) never reaches a
new end: each doubt of it ran the full `max_wait_s` and held every release, the scorer fell
further behind, and the latency phase of `make bench` ran into seconds (docs/benchmark.md,
"The latency phase's seconds"). So a doubt also settles when, `settle_s` after it, the
client holds nothing more of that partition (`GroupConsumer.caught_up`: its position at the
high watermark of its last fetch response; `settle_s` lets the fetches follow a burst whose
records became readable partition by partition), and the end that proves is not doubted
again while the client's high watermark for it stands: a record written there moves it
(librdkafka's counts an open transaction's records, not yet readable), and its next burst
is doubted as the first was. This is Kafka Streams' use of the client's cached lag for
`max.task.idle.ms` (KIP-695), after a doubt rather than instead of one.

A source that runs far ahead (more than `pause_above` records held) is paused at the client,
which drops its prefetched records and fetches them again from the next undelivered offset on
resume, so memory stays bounded whatever the skew between topics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stream.contracts.codec import (
    MAX_FIELD_LENGTH,
    DecodeError,
    TimeBounds,
    decode_label,
    decode_transaction,
)
from stream.contracts.messages import Label, Transaction
from stream.core.ordering import TimeAligner
from stream.kafka.clients import GroupConsumer
from stream.kafka.records import Polled, Record, Source
from stream.observability.metrics import DOUBT_OUTCOMES

log = logging.getLogger("stream.serving.intake")


@dataclass(slots=True)
class Arrival:
    """One consumed record, decoded: a transaction, a label, or why it cannot be used."""

    record: Record
    item: Transaction | Label | DecodeError
    time: float  # event time; -inf when the record could not be decoded
    decode_s: float  # seconds spent decoding (part of the per-event processing time)


def _time(arrival: Arrival) -> float:
    return arrival.time


class Intake:
    """Decode, buffer per source, release in event-time order; pause sources far ahead.

    >>> from stream.kafka.testing import MemoryConsumer
    >>> intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=60.0, clock=lambda: 0.0)
    >>> intake.track([("tx", 0), ("labels", 0)])
    >>> label = b'{"transaction_id": "t1", "card_id": "c", "is_fraud": true, "timestamp": 5000}'
    >>> intake.take(Polled([Record("labels", 0, 0, b"c", label)]))
    >>> intake.release()  # the transactions partition might still bring something earlier
    []
    >>> tx = (b'{"transaction_id": "t1", "card_id": "c", "merchant_id": "m", "amount": 1.0, '
    ...       b'"timestamp": 1000}')
    >>> intake.take(Polled([Record("tx", 0, 0, b"c", tx)], at_end=[("tx", 0)]))
    >>> [(a.record.topic, a.time) for a in intake.release()]  # tx at its end: both leave
    [('tx', 1.0), ('labels', 5.0)]
    """

    def __init__(
        self, consumer: GroupConsumer, input_topic: str, labels_topic: str, max_wait_s: float,
        pause_above: int = 20_000, clock: Callable[[], float] = time.monotonic,
        bounds: TimeBounds | None = None, wall_clock: Callable[[], float] = time.time,
        max_field_length: int = MAX_FIELD_LENGTH, settle_s: float = 0.2,
    ) -> None:
        self.consumer = consumer
        # This long (wall clock) without a cut poll settles the ends a burst made doubtful
        # (none are doubted when the alignment does not wait at all).
        self.settle_s = min(settle_s, max_wait_s)
        # Longer ids (or currency) are dead letters (`field_too_long`): see the codec.
        self.max_field_length = max_field_length
        self.input_topic = input_topic
        self.labels_topic = labels_topic
        self.pause_above = pause_above
        # Event times outside these bounds are dead letters (`timestamp_out_of_range`), so no
        # partition clock ever moves past the wall clock plus `bounds.ahead_s`.
        self.bounds = bounds
        self._wall_clock = wall_clock
        # The aligner's clock is the time spent polling; `clock` only times the polls.
        self._clock = clock
        self._polled_s = 0.0
        self._poll_started = 0.0  # when the current poll's wait began (see `restored`)
        self._aligner: TimeAligner[Arrival] = TimeAligner(
            _time, max_wait_s=max_wait_s, max_buffered=2**62, clock=self._poll_time,
            rank=self._rank)
        self._at_end: set[Source] = set()
        # Ends reported before a burst the client may not have finished handing out (see
        # above), each with when it was doubted; and when the last cut poll came (`clock`).
        self._doubted: dict[Source, float] = {}
        self._last_cut = 0.0
        # Ends a doubt found the client holding nothing more of, `settle_s` after it, each
        # with the high watermark that showed it (module docstring): not doubted again
        # while it stands there.
        self._proven: dict[Source, int] = {}
        # How each doubt ended (`fraudstream_alignment_doubts_total`): a new end of its
        # partition, the client holding nothing more of it, `settle_s` with no poll cut, or
        # `max_wait_s` in vain, which held every release that long.
        self.doubts = dict.fromkeys(DOUBT_OUTCOMES, 0)
        self._paused: set[Source] = set()
        # The last release stopped at its `most`: more may be released without polling.
        self.backlog = False

    def __len__(self) -> int:
        return len(self._aligner)

    @property
    def aligned(self) -> bool:
        """The last release kept event-time order across every source (it did not give up
        waiting for one): what the shared merchant table's floor relies on."""
        return self._aligner.last_aligned

    @property
    def timed_out(self) -> int:
        """Records released after giving up waiting for a source (order not assured)."""
        return self._aligner.timed_out

    def _rank(self, source: Source) -> tuple[int, int]:
        return (0 if source[0] == self.input_topic else 1, source[1])

    def track(self, sources: Iterable[Source]) -> None:
        """The assigned sources (on every assignment); their pauses are lifted."""
        kept = set(sources)
        wanted = sorted(kept)
        self._aligner.track(wanted)
        self._at_end &= kept
        self._doubted = {s: at for s, at in self._doubted.items() if s in kept}
        self._proven = {s: high for s, high in self._proven.items() if s in kept}
        stale = self._paused - kept
        self._paused -= stale
        if self._paused:  # a client keeps pauses across assignments: lift ours explicitly
            self._resume(list(self._paused))

    @property
    def paused(self) -> list[Source]:
        """The sources this intake has paused at the client."""
        return sorted(self._paused)

    def revoke(self, sources: Iterable[Source]) -> None:
        """Partitions taken away: what they held is fetched again by their next owner.

        Those this intake paused are resumed at the client first, while still assigned: a
        client may keep a partition's pause through the rebalance that gives it straight
        back (kafka-python 3.0 keeps a retained partition's state, its pause included, across
        an eager rebalance, librdkafka too), and a pause the intake has forgotten is never
        lifted: that partition was never fetched again (tests/integration/
        test_kafka_adapters.py, both clients)."""
        gone = set(sources)
        if self._paused & gone:
            self._resume(sorted(self._paused & gone))
        self.track(set(self._aligner.sources()) - gone)

    def restored(self) -> None:
        """Partitions were restored (an assignment, a rewind): nothing was fetched meanwhile,
        so the wait for each empty source starts now (TimeAligner.restart_waits). A restore
        on assignment runs inside the poll (the rebalance callback): its time is not polling,
        so the poll's own wait starts again when it ends."""
        self._poll_started = self._clock()
        self._aligner.restart_waits()

    def clear(self) -> None:
        """After a rewind: the held records will be fetched again from the committed offsets."""
        self._aligner.clear()
        self._at_end.clear()
        self._doubted.clear()
        self._proven.clear()
        self.backlog = False
        if self._paused:
            self._resume(list(self._paused))

    def _poll_time(self) -> float:
        return self._polled_s

    def poll(self, most: int, timeout_s: float) -> Polled:
        """Poll the consumer and take what it returns; the poll's duration is time spent
        waiting for the empty sources (see the module docstring).

        >>> from stream.kafka.testing import MemoryConsumer
        >>> now = [0.0]
        >>> class Slow(MemoryConsumer):  # each poll takes 1.5 s
        ...     def poll(self, most, timeout_s):
        ...         now[0] += 1.5
        ...         return super().poll(most, timeout_s)
        >>> label = b'{"transaction_id": "t", "card_id": "c", "is_fraud": true, "timestamp": 9}'
        >>> intake = Intake(Slow(), "tx", "labels", max_wait_s=2.0, clock=lambda: now[0])
        >>> intake.track([("tx", 0), ("labels", 0)])
        >>> intake.take(Polled([Record("labels", 0, 0, b"c", label)]))
        >>> now[0] += 60.0  # a minute processing and checkpointing: tx 0 was not polled
        >>> intake.release(), intake.timed_out
        ([], 0)
        >>> _ = intake.poll(500, 0.1); len(intake.release())  # polled 1.5 s in vain: wait on
        0
        >>> _ = intake.poll(500, 0.1); len(intake.release()), intake.timed_out  # 3 s: give up
        (1, 1)
        """
        self._poll_started = self._clock()
        polled = self.consumer.poll(most, timeout_s)
        self._polled_s += max(0.0, self._clock() - self._poll_started)
        self.take(polled)
        return polled

    def take(self, polled: Polled) -> None:
        """Decode one poll's records into the per-source buffers; note the partitions the
        poll found at their end, and doubt the ends a burst may have overtaken (module
        docstring).

        >>> from stream.kafka.testing import MemoryConsumer
        >>> intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=60.0, clock=lambda: 0.0)
        >>> intake.track([("tx", 0), ("labels", 0)])
        >>> intake.take(Polled(at_end=[("tx", 0), ("labels", 0)]))  # both caught up
        >>> tx = (b'{"transaction_id": "t1", "card_id": "c", "merchant_id": "m", '
        ...       b'"amount": 1.0, "timestamp": 9000}')
        >>> intake.take(Polled([Record("tx", 0, 0, b"c", tx)], more=True))  # a burst, cut
        >>> intake.release()  # the labels' end came before it: they may hold earlier records
        []
        >>> label = (b'{"transaction_id": "t0", "card_id": "c", "is_fraud": true, '
        ...          b'"timestamp": 5000}')
        >>> intake.take(Polled([Record("labels", 0, 0, b"c", label)], at_end=[("labels", 0)]))
        >>> [(a.record.topic, a.time) for a in intake.release()]  # the rest, in order
        [('labels', 5.0), ('tx', 9.0)]
        """
        by_source: dict[Source, list[Arrival]] = {}
        at_end = self._at_end
        woke = False  # records of a source that was at its end
        now = self._wall_clock() if self.bounds is not None and polled.records else 0.0
        for record in polled.records:
            source = record.source
            arrival = self._decode(record, source[0], now)
            bucket = by_source.get(source)
            if bucket is None:
                by_source[source] = [arrival]
                if source in at_end:
                    at_end.discard(source)
                    woke = True
            else:
                bucket.append(arrival)
        # Only an end this poll found anew is news: kafka-python's adapter reports every
        # partition at its end on every poll, from what it fetched before the burst too.
        self._doubt(woke, polled.more, [s for s in polled.at_end if s not in at_end])
        at_end.update(polled.at_end)
        for source, arrivals in by_source.items():
            self._aligner.add(source, arrivals)
            if self._aligner.buffered(source) > self.pause_above and source not in self._paused:
                self.consumer.pause([source])
                self._paused.add(source)

    def _doubt(self, woke: bool, cut: bool, ends: list[Source]) -> None:
        """After a poll: a cut poll that woke a source at its end doubts the other ends
        known (those a doubt has not proven already), each waited for from now. A new end
        of a source (`ends`: not at its end before this poll) settles its doubt; so does the
        client, `settle_s` after it, holding nothing more of it (which proves that end);
        `settle_s` since the last cut poll settles all; `max_wait_s` since its doubt, any."""
        doubted, now = self._doubted, self._clock()
        if cut:
            self._last_cut = now
            if woke and self.settle_s > 0:
                fresh = self._at_end.difference(doubted, ends)
                if fresh and self._proven:
                    fresh = self._unproven(fresh)
                if fresh:
                    doubted.update(dict.fromkeys(fresh, now))
                    self._aligner.restart_waits(fresh)
        if not doubted:
            return
        counts = self.doubts
        ripe = now - self.settle_s
        if any(at <= ripe for at in doubted.values()):
            self._prove(ripe)
        if doubted and not cut and now - self._last_cut >= self.settle_s:
            counts["quiet"] += len(doubted)
            doubted.clear()
            return
        max_wait = self._aligner.max_wait_s
        expired = [s for s, at in doubted.items() if now - at >= max_wait]
        for source in expired:
            del doubted[source]
        counts["expired"] += len(expired)
        for source in ends:
            if doubted.pop(source, None) is not None:
                counts["fresh_end"] += 1

    def _prove(self, ripe: float) -> None:
        """Settle the doubts raised by `ripe` whose sources the client holds nothing more of
        (`GroupConsumer.caught_up`), and keep the high watermark that proved each."""
        caught = self.consumer.caught_up()
        doubted, proven = self._doubted, self._proven
        for source in [s for s, at in doubted.items() if at <= ripe and s in caught
                       and s not in self._paused]:
            del doubted[source]
            proven[source] = caught[source]
            self.doubts["caught_up"] += 1

    def _unproven(self, ends: set[Source]) -> set[Source]:
        """The ends to doubt: those a doubt has not proven at the client's high watermark
        of now (a record written to a source since its proof moves its high watermark)."""
        caught, proven = self.consumer.caught_up(), self._proven
        return {s for s in ends if s not in proven or caught.get(s) != proven[s]}

    def release(self, until: float = math.inf, most: float = math.inf) -> list[Arrival]:
        """Every held record that is now safe to process, in event-time order, up to event
        time `until`; at most `most` of them (`backlog` then says whether some were left).

        Why a bound: what one release gives is processed before the loop checkpoints, polls
        or beats again. A source waited for and then found at its end lets go of everything
        the others held meanwhile, up to `pause_above` records each: 4,228-4,783 records of
        a scorer started on a backlog went out in its first release, and a SIGKILL in it
        left nothing committed, all of them scored again by its successor (at-least-once);
        a restart after a longer outage would hold the loop for a minute, past the health
        check's `stuck_after_s`.

        >>> from stream.kafka.testing import MemoryConsumer
        >>> intake = Intake(MemoryConsumer(), "tx", "labels", max_wait_s=0.0, clock=lambda: 0.0)
        >>> intake.track([("tx", 0)])
        >>> tx = (b'{"transaction_id": "t", "card_id": "c", "merchant_id": "m", '
        ...       b'"amount": 1.0, "timestamp": 9000}')
        >>> intake.take(Polled([Record("tx", 0, n, b"c", tx) for n in range(5)]))
        >>> len(intake.release(most=3)), intake.backlog, len(intake.release()), intake.backlog
        (3, True, 2, False)
        """
        ends = self._at_end.difference(self._doubted) if self._doubted else self._at_end
        out = self._aligner.release(ends, until, most)
        self.backlog = len(out) >= most
        if self._paused:
            low = self.pause_above // 2
            ready = [s for s in self._paused if self._aligner.buffered(s) <= low]
            if ready:
                self._resume(ready)
        return out

    def next_time(self, partition: int) -> float | None:
        """The earliest event time queued for an input partition (its transactions and its
        labels): what the partition will process next. -inf when unknown (a source is empty
        and may still bring something earlier); None when both sources are empty at their
        end (the partition is idle)."""
        heads = []
        for topic in (self.input_topic, self.labels_topic):
            source = (topic, partition)
            head = self._aligner.head(source)
            if head is not None:
                heads.append(head)
            elif source not in self._at_end or source in self._doubted:
                return -math.inf
        return min(heads) if heads else None

    def _resume(self, sources: list[Source]) -> None:
        self.consumer.resume(sources)
        self._paused.difference_update(sources)

    def _decode(self, record: Record, topic: str, now: float) -> Arrival:
        started = time.perf_counter()
        item: Transaction | Label | DecodeError
        try:
            if topic == self.input_topic:
                item = decode_transaction(record.value, self.bounds, record.timestamp_ms, now,
                                          self.max_field_length)
            else:
                item = decode_label(record.value, self.bounds, record.timestamp_ms, now,
                                    self.max_field_length)
            at = item.timestamp
        except DecodeError as exc:
            item, at = exc, -math.inf
        except Exception as exc:  # a record must never stop the scorer: it is dead-lettered
            item = DecodeError("processing_error", f"{type(exc).__name__}: {exc}")
            at = -math.inf
        return Arrival(record, item, at, time.perf_counter() - started)
