"""The merchant feed, the Kafka half of the shared merchant table: publish what this instance's
partitions folded, fold what the other instances' partitions published.

Why: partitions are keyed by card, so every merchant's traffic is spread over every partition
and every instance. Each instance keeps a full copy of the merchant table
(stream/core/features/merchant_table.py), as a Kafka Streams global table: its own partitions
fold their merchant events directly, and publish them, with their watermarks, to
`<application_id>.merchant-feed` (partition N for input partition N) in each checkpoint, in
the checkpoint's transaction under exactly-once; every instance reads all of the feed
(read_committed) and folds the partitions it does not own. The table folds events in an order
that depends on the events alone, so the same input gives the same merchant state, and the
same scores, for any number of instances.

A rebuild (on start, on every rebalance and after a rewind) empties the table, loads the
latest image of it when there is a usable one (serving/merchant_images.py), and reads the
feed back from where the image stands (from its start without one), before the owned
partitions are restored from their changelog; the feed's retention therefore bounds how far
back a rebuilt merchant state reaches without images (topics/
transactions.merchant-feed.toml). Feed records are untrusted: a malformed one is skipped and
counted, never folded.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from stream.config import Settings
from stream.core.features.merchant_table import FeedEvent
from stream.core.pipeline import Pipeline
from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Clients, Reader
from stream.kafka.records import BEGINNING, Record, Source
from stream.observability.metrics import Metrics
from stream.serving.handlers import RECORD_OVERHEAD
from stream.serving.merchant_images import MerchantImages, feed_starts
from stream.state.merchant_feed import FeedError, decode_feed, encode_feed

log = logging.getLogger("stream.serving.merchant_feed")

Send = Callable[..., None]
# Events the table may queue during a rebuild before the partitions ahead are paused: 18 to
# 50 MB (queued, an example of 31 features takes about 500 bytes, a transaction or label 180).
QUEUE_MAX = 100_000
# Feed records a rebuild's poll returns at most: a pause takes effect from the next poll,
# so fewer when the records are large (`rebuild_poll_size`).
REBUILD_POLL_RECORDS = 1_000


def feed_records(first: int, events: list[FeedEvent], mark: float, stream_time: float,
                 limit: int, step: int = 500) -> list[bytes]:
    """One partition's news as feed records of at most `limit` bytes each.

    Why: a checkpoint's events can be far more than a record may hold (with the shared
    champion every label carries its features, ~600 bytes: 1,600 labels make a megabyte), and
    a refused record sent the scorer into checkpointing one input at a time. Only the last
    record carries the new watermark and stream time; the others carry none (a reader may
    fold one record before it fetches the next, and must not pass the watermark early).

    >>> records = feed_records(1, [(1.0, 0, "m", 0.0)] * 5, 70.0, 80.0, limit=10_000, step=2)
    >>> [decode_feed(r).first_seq for r in records], [decode_feed(r).mark for r in records]
    ([1, 3, 5], [-inf, -inf, 70.0])
    """
    out: list[bytes] = []
    i = 0
    while True:
        chunk = events[i:i + step]
        last = i + len(chunk) >= len(events)
        raw = encode_feed(first + i, chunk, mark if last else -math.inf,
                          stream_time if last else -math.inf)
        if len(raw) > limit and len(chunk) > 1:
            step = max(1, len(chunk) // 2)
            continue
        out.append(raw)
        i += len(chunk)
        if last:
            return out


def rebuild_poll_size(most: int, queue_max: int, partitions: int,
                      events_per_record: float) -> int:
    """Feed records a rebuild's next poll may return: at most `most`, and few enough that
    one poll from every partition adds at most half of `queue_max` events.

    Why: a rebuild pauses the partitions that run ahead only after a poll, and the frontier
    moves only once every partition has brought something, so the table can queue one poll
    per partition beyond its limit. A feed record holds a whole checkpoint's events (tens to
    hundreds), and 1,000 of them a poll let the queue reach 229,074 events against a limit of
    100,000 (`make soak`, the process started from an image).

    Until a poll has shown how large the records are, 10: a first poll of 1,000 records of
    166 events each queued 166,000 events before anything could be paused.

    >>> rebuild_poll_size(1_000, 100_000, 4, 0.0), rebuild_poll_size(1_000, 100_000, 4, 40.0)
    (10, 312)
    >>> rebuild_poll_size(1_000, 100_000, 16, 5_000.0)  # never nothing: the read must move
    1
    """
    if events_per_record <= 0.0:
        return min(most, 10)
    fits = int(queue_max / (2 * partitions * events_per_record))
    return max(1, min(most, fits))


class MerchantFeed:
    """Publish the owned partitions' merchant events; fold everyone else's."""

    def __init__(self, settings: Settings, pipeline: Pipeline, clients: Clients,
                 metrics: Metrics, partitions: int) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.clients = clients
        self.metrics = metrics
        self.topic = settings.merchant_feed_topic
        self.partitions = partitions
        self._tail: Reader | None = None
        self._next_poll = 0.0
        self._bad_logged = 0
        # A rebuild pauses the feed partitions that run ahead while the table queues more
        # than `queue_max` events (`_pace`), reading `poll_records` records a poll; the most
        # it queued and how often it paused are the rebuild's log line.
        self.queue_max = QUEUE_MAX
        self.poll_records = REBUILD_POLL_RECORDS
        self.rebuild_queued_peak = 0
        self.rebuild_pauses = 0
        # Per feed partition, the offset after the last record read (folded, or an owned
        # partition's own, folded when made): where an image taken now stands in the feed.
        self.positions: dict[int, int] = {}
        # Images need the state key (they are signed): without one the feed is folded whole.
        self.images = (MerchantImages(settings, pipeline, metrics)
                       if settings.merchant_image_interval_s > 0
                       and pipeline.config.state_key is not None else None)

    # -- publishing (inside a checkpoint) ---------------------------------------------------
    def publish(self, send: Send, headers: tuple[tuple[str, bytes], ...]) -> int:
        """The owned partitions' news, in records that fit the output limit; returns how many
        were sent."""
        sent = 0
        pipeline = self.pipeline
        limit = self.settings.max_message_bytes - RECORD_OVERHEAD
        for partition in sorted(pipeline.partitions):
            drained = pipeline.drain_feed(partition)
            if drained is None:
                continue
            for record in feed_records(*drained, limit=limit):
                send(self.topic, None, record, partition=partition, headers=headers)
                sent += 1
        images = self.images
        if images is not None and images.due():  # every owned partition's news is out now
            sent += images.write(send, headers, dict(self.positions))
        return sent

    # -- reading ------------------------------------------------------------------------------
    def rebuild(self, stall_s: float = 60.0) -> int:
        """Empty the table and fold the whole feed back, up to its committed end; then follow
        its tail with the same reader (one client for the life of the scorer: a pure-Python
        client takes a second or more to start). Returns the events folded."""
        started = time.perf_counter()
        self.rebuild_queued_peak = self.rebuild_pauses = 0
        self.pipeline.reset_merchants()
        if self._tail is None:
            self._tail = self.clients.reader(bulk=True)
        reader = self._tail
        ends = self._ends(reader, stall_s)
        positions = self.images.load(reader, ends, stall_s) if self.images is not None else None
        starts = feed_starts(ends, positions)
        todo = {source for source, (low, high) in ends.items()
                if high > (low if starts[source] == BEGINNING else starts[source])}
        folded = 0
        if todo:
            reader.assign(starts)
            folded = self._read_to(reader, todo, {s: h for s, (_, h) in ends.items()}, stall_s)
        else:
            reader.assign({source: high for source, (_, high) in ends.items()})
        self.positions = {p: high for (_, p), (_, high) in ends.items()}
        if self.images is not None:
            self.images.rebuilt(folded)
        elapsed = time.perf_counter() - started
        self.metrics.merchant_rebuild_seconds.observe(elapsed)
        log.info("merchant table rebuilt from %s%s in %.2fs: %d events, %d merchants, "
                 "at most %d queued, %d pauses", self.topic,
                 " and an image" if positions is not None else "", elapsed, folded,
                 len(self.pipeline.merchants or ()), self.rebuild_queued_peak,
                 self.rebuild_pauses)
        return folded

    def _ends(self, reader: Reader, stall_s: float) -> dict[Source, tuple[int, int]]:
        """Each feed partition's first and end offsets. A feed the scorer has just created
        answers "not leader" for a moment: retried, within `stall_s`."""
        deadline = time.monotonic() + stall_s
        while True:
            try:
                return {(self.topic, p): reader.watermarks((self.topic, p), stall_s)
                        for p in range(self.partitions)}
            except ClientError as exc:
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"cannot read {self.topic}: {exc}") from None
                log.debug("%s not readable yet (%s); retrying", self.topic, exc)
                time.sleep(0.2)

    def _read_to(self, reader: Reader, todo: set[Source], ends: dict[Source, int],
                 stall_s: float) -> int:
        folded = records = 0
        last_progress = time.monotonic()
        paused: set[Source] = set()
        try:
            while todo:
                size = rebuild_poll_size(self.poll_records, self.queue_max, self.partitions,
                                         folded / records if records else 0.0)
                try:  # a pause acts from the next poll: few records a poll keep it prompt
                    polled = reader.poll(size, 0.2)
                except ClientError as exc:
                    raise InfrastructureError(f"merchant feed read failed: {exc}") from None
                records += len(polled.records)
                for record in polled.records:
                    folded += self._fold(record)
                    if record.next_offset >= ends[record.source]:
                        todo.discard(record.source)
                    last_progress = time.monotonic()
                if polled.records:  # keep the state copies to what a reader can still ask for
                    self.pipeline.release_merchant_copies()
                todo.difference_update(polled.at_end)
                paused = self._pace(reader, todo, paused)
                if todo and time.monotonic() - last_progress > stall_s:
                    raise InfrastructureError(
                        f"merchant feed read made no progress for {stall_s:.0f}s")
        finally:
            if paused:  # the same reader follows the tail next: nothing stays paused
                reader.resume(sorted(paused))
        return folded

    def _pace(self, reader: Reader, todo: set[Source], paused: set[Source]) -> set[Source]:
        """Pause the feed partitions that run ahead while the table queues more than
        `queue_max` events; returns the partitions paused now.

        Why: the table folds an event only once every partition's watermark has passed it,
        and a bulk reader delivers the feed partition by partition (16 MB fetches), so a
        rebuild queued most of the feed at once: 524,559 events of a 600,000-event feed of 8
        partitions in process, and in `make soak` a broker restart left the scorer 307 MiB
        larger for good (+133 MiB with the pauses). As Kafka Streams pauses a partition
        whose buffer is full, the partitions ahead of the one holding the frontier back wait
        at the client (which drops what it prefetched for them and fetches it again on
        resume) until the queue is down to half; the partition that holds it back is never
        paused, so the read always moves. Pausing changes only the order records arrive in,
        never the fold's."""
        table = self.pipeline.merchants
        if table is None:
            return paused
        queued = table.waiting
        if queued > self.rebuild_queued_peak:
            self.rebuild_queued_peak = queued
        wanted: set[Source] = set()
        if queued > self.queue_max or (paused and queued > self.queue_max // 2):
            marks = {source: table.effective_mark(source[1]) for source in todo}
            lowest = min(table.effective_mark(p) for p in range(table.partitions))
            holding = {source for source, mark in marks.items() if mark <= lowest}
            if holding:  # otherwise a finished partition holds the frontier: reading can't help
                wanted = set(todo) - holding
        if wanted - paused:
            reader.pause(sorted(wanted - paused))
            self.rebuild_pauses += 1
        if paused - wanted:
            reader.resume(sorted(paused - wanted))
        return wanted

    def poll(self, timeout_s: float = 0.0) -> int:
        """Fold whatever the other instances published since the last call, waiting up to
        `timeout_s` for something. Without a wait, the feed is asked at most every 10 ms:
        the loop calls this once per poll of its own, and a pure-Python client's poll costs
        more than the records it returns when there are none."""
        tail = self._tail
        if tail is None:
            return 0
        now = time.monotonic()
        if timeout_s <= 0.0 and now < self._next_poll:
            return 0
        self._next_poll = now + 0.01
        try:
            polled = tail.poll(10_000, timeout_s)
        except ClientError as exc:
            raise InfrastructureError(f"merchant feed read failed: {exc}") from None
        # The owned partitions' records are this instance's own, folded when they were made:
        # not decoded again (with the shared champion most of a record is its examples'
        # numbers, and validating them was most of a single instance's feed cost).
        owned, positions = self.pipeline.partitions, self.positions
        folded = 0
        for record in polled.records:
            if record.partition not in owned:
                folded += self._fold(record)
            positions[record.partition] = record.next_offset
        return folded

    def _fold(self, record: Record) -> int:
        try:
            feed = decode_feed(record.value)
        except FeedError as exc:
            self.metrics.merchant_feed_rejected.inc()
            if self._bad_logged < 10:
                self._bad_logged += 1
                log.warning("%s[%d] offset %d: skipping a malformed feed record: %s",
                            record.topic, record.partition, record.offset, exc)
            return 0
        if not 0 <= record.partition < self.partitions:
            return 0
        return self.pipeline.apply_feed(record.partition, feed.first_seq, feed.events,
                                        feed.mark, feed.stream_time)

    def close(self) -> None:
        if self._tail is not None:
            tail, self._tail = self._tail, None
            try:
                tail.close()
            except Exception:  # closing a reader of a dead broker must not mask the error
                log.debug("closing the merchant feed reader failed", exc_info=True)
