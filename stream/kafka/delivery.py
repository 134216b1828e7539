"""How outputs and consumer offsets become durable together: the delivery guarantee.

`ExactlyOnce` puts verdicts, dead letters, changelog records and the consumed offsets in one
Kafka transaction per checkpoint (KIP-447: the offsets carry the consumer's group metadata,
so a zombie instance that lost its partitions is fenced by the broker). A crash aborts the
open transaction: read_committed readers never see its verdicts, and the restarted instance
restores state and offsets from the same committed checkpoint.

`AtLeastOnce` commits a checkpoint's offsets only after every output sent before it is
acknowledged: a crash can repeat verdicts, never lose one.

A little over 300 lines on purpose: the two guarantees share the sending helper and most of
their reasoning, and the exactly-once recovery paths read best next to each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from stream.errors import FencedError, GroupMovedError, InfrastructureError, OutputTooLargeError
from stream.kafka.classify import ClientError, classify
from stream.kafka.clients import GroupConsumer, Offsets, Producer
from stream.kafka.records import Headers

log = logging.getLogger("stream.delivery")


QUEUE_FULL_TIMEOUT_S = 30.0
ABORT_ATTEMPTS = 3  # timed-out aborts in a row before the producer is replaced
OFFSETS_ATTEMPTS = 3  # timed-out sends of the offsets in a row, the same


def send_waiting(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None = None, headers: Headers | None = None,
                 on_delivery: Callable[[ClientError | None], None] | None = None) -> None:
    """Enqueue one record; when the local queue is full, serve delivery reports and retry
    (back-pressure instead of an error), but not forever: a queue that does not drain means
    the producer cannot deliver, which the loop must hear about to recover."""
    try:
        producer.send(topic, key, value, partition, headers, on_delivery)
        return
    except ClientError as exc:
        if exc.kind != "queue_full":
            raise
    deadline = time.monotonic() + QUEUE_FULL_TIMEOUT_S
    while True:
        producer.poll(0.05)
        try:
            producer.send(topic, key, value, partition, headers, on_delivery)
            return
        except ClientError as exc:
            if exc.kind != "queue_full":
                raise
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"producer queue full for {QUEUE_FULL_TIMEOUT_S:.0f}s: nothing is being "
                    "delivered") from None


class _Epoch:
    """The sends between two checkpoints, and the offsets that become committable once every
    one of them is acknowledged."""

    __slots__ = ("outstanding", "failed", "offsets", "report")

    def __init__(self) -> None:
        self.outstanding = 0
        self.failed: list[ClientError] = []
        self.offsets: Offsets = {}
        # `delivered` bound once: `epoch.delivered` makes a new bound method at every read,
        # which a producer cannot recognise as the callback it already wrapped.
        self.report: Callable[[ClientError | None], None] = self.delivered

    def delivered(self, error: ClientError | None) -> None:
        self.outstanding -= 1
        if error is not None:
            self.failed.append(error)


class AtLeastOnce:
    """Send freely; commit a checkpoint's offsets only once every send before it is
    acknowledged.

    Why not flush-then-commit at every checkpoint: that stalls the loop for an acknowledgement
    and a commit round trip (~8 ms measured) every 100 ms, which is most of the p99 latency.
    Instead a checkpoint closes an epoch; its offsets are committed (asynchronously) by a later
    checkpoint once the epoch's delivery reports are all in, in epoch order. `wait=True`
    (shutdown, rebalance) flushes and commits synchronously. A failed send fails the checkpoint
    that finds it: the loop rewinds to the last committed offsets, so nothing is lost.
    """

    transactional = False

    def __init__(self, producer_factory: Callable[[], Producer], consumer: GroupConsumer,
                 timeout_s: float) -> None:
        self._factory = producer_factory
        self.producer = producer_factory()
        self.consumer = consumer
        self.timeout_s = timeout_s
        self._epoch = _Epoch()
        self._closed: deque[_Epoch] = deque()

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None) -> None:
        epoch = self._epoch
        try:
            send_waiting(self.producer, topic, key, value, partition, headers, epoch.report)
        except ClientError as exc:
            if exc.kind == "too_large":  # refused at once: this record only, nothing sent
                raise classify(exc, "send failed") from exc
            raise
        epoch.outstanding += 1

    def commit(self, offsets: Offsets, wait: bool = True) -> None:
        epoch, self._epoch = self._epoch, _Epoch()
        epoch.offsets = offsets
        self._closed.append(epoch)
        try:
            if wait:
                left = self.producer.flush(self.timeout_s)
                if left:
                    raise InfrastructureError(
                        f"flush timed out with {left} records unacknowledged")
            else:
                self.producer.poll(0)  # serve the delivery reports that are in
        except ClientError as exc:  # a refused login: stop, as everywhere (classify)
            raise classify(exc, "delivery failed") from exc
        self._commit_acknowledged(asynchronous=not wait)

    def _commit_acknowledged(self, asynchronous: bool) -> None:
        """Commit the offsets of the oldest epochs whose sends are all acknowledged."""
        ready: dict[tuple[str, int], int] = {}
        closed = self._closed
        while closed and closed[0].outstanding <= 0:
            epoch = closed.popleft()
            if epoch.failed:
                closed.clear()
                too_large = [e for e in epoch.failed if e.kind == "too_large"]
                if too_large:  # a record's output, not the broker: the loop finds the record
                    raise OutputTooLargeError(f"{len(epoch.failed)} sends failed: {too_large[0]}")
                raise InfrastructureError(f"{len(epoch.failed)} sends failed: {epoch.failed[0]}")
            ready.update(epoch.offsets)
        if not ready:
            return
        try:
            self.consumer.commit(ready, asynchronous=asynchronous)
        except ClientError as exc:
            raise classify(exc, "offset commit failed") from exc

    def renew(self) -> None:
        """Nothing to do: only a transactional producer keeps a coordinator that can hang
        (`ExactlyOnce.renew`)."""

    def settle(self) -> None:
        """Commit the offsets of the checkpoints acknowledged since the last one (the loop
        calls this while it waits for input).

        Why: a checkpoint's offsets are committed by a later checkpoint, and an idle scorer
        makes none, so its last checkpoint's offsets stayed uncommitted until input came
        again: the group showed that checkpoint's records as lag all along, a restart after
        a crash did them again, and a lost membership rewound the scorer (issue 13)."""
        if not self._closed:
            return
        try:
            self.producer.poll(0)  # serve the delivery reports that are in
        except ClientError as exc:
            raise classify(exc, "delivery failed") from exc
        self._commit_acknowledged(asynchronous=True)

    @property
    def settled(self) -> bool:
        """Nothing sent since the last checkpoint, every checkpoint's offsets committed, and
        the group's answer to that commit heard: no work in flight that a lost group
        membership could strand."""
        return (self._epoch.outstanding == 0 and not self._closed
                and not self.consumer.commit_pending())

    def reset(self, replace: bool = True) -> None:
        """After a failure: drop unsent output (it will be redone) and start a new producer
        (always: `replace` is for the exactly-once guarantee's sake)."""
        self._epoch = _Epoch()
        self._closed.clear()
        self.producer.discard()
        self.producer = self._factory()

    def close(self) -> None:
        self.producer.close(10.0)


class ExactlyOnce:
    """One transaction per checkpoint: outputs, changelog and offsets commit or abort together.

    Exactly one producer holds our transactional id at any time. A new producer is created
    only when the current one is unusable (a fatal error); a timed-out init or abort (broker
    unreachable) is retried on the *same* producer, as librdkafka intends: a second producer
    started while the first still completes its init in the background would fence us.
    """

    transactional = True

    def __init__(self, producer_factory: Callable[[], Producer], consumer: GroupConsumer,
                 timeout_s: float) -> None:
        self._factory = producer_factory
        self.consumer = consumer
        self.timeout_s = timeout_s
        self._initialising: Producer | None = None  # a producer whose init timed out, to retry
        self._open = False
        self._wedged = False  # a transactional call never returned: abandon the producer
        self._abort_timeouts = 0
        self._offsets_timeouts = 0
        self._renew = False  # the next transaction starts on a new producer (`renew`)
        self.producer: Producer | None = self._start()

    def renew(self) -> None:
        """Begin the next transaction on a new producer (nothing open is touched).

        Why: after a broker restart librdkafka's transactional producer can hang on
        AddOffsetsToTxn with the coordinator it had. In a 30-minute `make soak` (2026-12-05)
        the first checkpoint after the restart blocked there for 35 s, failed, and rewound
        the scorer (30 s of rebuilding); a new producer looks its coordinator up again. A
        lost group membership that finds nothing uncommitted (`Rebalance.on_lost`) asks for
        this: the broker has just been away longer than the session timeout."""
        self._renew = True

    def _start(self) -> Producer:
        producer: Producer | None = self._initialising or self._factory()
        assert producer is not None
        self._initialising = None
        try:
            producer.init_transactions(self.timeout_s)
        except ClientError as exc:
            if exc.retriable and not exc.fatal:
                self._initialising = producer  # the init goes on; the retry resumes it
            else:
                producer.discard()
            producer = None  # no reference from this frame's traceback keeps it alive
            failure = classify(exc, "cannot start transactions")
            if isinstance(failure, GroupMovedError):
                failure = InfrastructureError(str(failure))
            raise failure from exc
        return producer

    def _begin(self) -> Producer:
        """The producer, in an open transaction."""
        if self._renew and not self._open and not self._wedged:
            self._replace()
        if self.producer is None:
            self.producer = self._start()
        if not self._open:
            try:
                self.producer.begin_transaction()
            except ClientError as exc:
                raise classify(exc, "cannot begin a transaction") from exc
            self._open = True
        return self.producer

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None) -> None:
        producer = self._begin()
        try:
            send_waiting(producer, topic, key, value, partition, headers)
        except ClientError as exc:
            raise classify(exc, "send failed") from exc

    def commit(self, offsets: Offsets, wait: bool = True) -> None:
        """`wait` is moot here: a transaction commit is always synchronous. On failure the
        transaction stays open until `reset` aborts it."""
        if not offsets and not self._open:
            return
        producer = self._begin()
        try:
            if offsets:
                metadata = self.consumer.group_metadata()
                try:
                    self._bounded("send offsets", lambda: producer.send_offsets_to_transaction(
                        offsets, metadata, self.timeout_s))
                except ClientError as exc:
                    if exc.kind == "timed_out" and not exc.fatal:
                        self._offsets_timeouts += 1
                    raise
                self._offsets_timeouts = 0
            self._bounded("commit", lambda: producer.commit_transaction(self.timeout_s))
        except ClientError as exc:
            raise classify(exc, "transaction commit failed") from exc
        self._open = False

    def _bounded(self, what: str, call: Callable[[], None]) -> None:
        """Run a transactional call with a deadline of our own. librdkafka 2.x can block in
        send_offsets_to_transaction past its timeout, forever, when the group coordinator
        went away (a broker restart: confluentinc/librdkafka#5456, #5511, open). A call
        still blocked at the deadline wedges this producer: `reset` abandons it and a new
        producer's init fences it, which also ends the blocked call."""
        outcome: list[BaseException | None] = []

        def _run() -> None:
            try:
                call()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                outcome.append(exc)

        worker = threading.Thread(target=_run, name=f"txn-{what}", daemon=True)
        worker.start()
        worker.join(self.timeout_s + 5.0)
        if not outcome:
            self._wedged = True
            raise InfrastructureError(
                f"transaction {what} did not return within {self.timeout_s + 5.0:.0f}s")
        if outcome[0] is not None:
            raise outcome[0]

    def settle(self) -> None:
        """Nothing to do: a checkpoint's offsets commit with its transaction."""

    @property
    def settled(self) -> bool:
        """No transaction open: every checkpoint so far committed (or aborted by a rewind),
        nothing in flight that a lost group membership could strand."""
        return not self._open and not self._wedged

    def reset(self, replace: bool = False) -> None:
        """After a failed checkpoint: abort the open transaction, so nothing from it ever
        becomes visible. A producer that cannot abort (fatal error) is replaced, and so is one
        whose transaction a record too large failed when `replace` (both clients then need
        an epoch bump, and kafka-python's commit may never complete); the new one's init
        makes the broker abort whatever the old one left open."""
        if self.producer is None:
            self.producer = self._start()
            return
        if self._wedged:
            log.warning("abandoning a producer stuck in a transactional call; a new one "
                        "fences it")
            self._wedged = self._open = False
            self.producer = None  # its blocked call holds the last reference until it ends
            self.producer = self._start()
            return
        if not self._open:
            return
        if replace:
            self._replace()
            return
        if self._offsets_timeouts >= OFFSETS_ATTEMPTS:
            # After a broker restart librdkafka can keep timing out on AddOffsetsToTxn with the
            # producer it had (a clean-clone CI saw 20 in a row, 5 s each, until the test gave
            # up): a new producer looks its coordinator up again, and its init aborts the
            # transaction.
            log.info("sending the offsets timed out %d times in a row; starting a new producer",
                     self._offsets_timeouts)
            self._replace()
            return
        producer = self.producer
        try:
            self._bounded("abort", lambda: producer.abort_transaction(self.timeout_s))
            self._open = False
            self._abort_timeouts = 0
            return
        except ClientError as exc:
            if exc.kind == "fenced":
                raise FencedError(f"this instance's producer was fenced: {exc}") from exc
            if exc.kind == "in_progress":
                self._resume_commit(producer)  # a commit that timed out is still going on
                return
            if exc.retriable and not exc.fatal:
                self._abort_timeouts += 1
                if self._abort_timeouts < ABORT_ATTEMPTS:
                    raise InfrastructureError(f"abort failed, will retry: {exc}") from exc
                # The same librdkafka bug can leave the abort waiting on a coordinator it will
                # never look up again: a fresh client's init aborts the transaction instead.
            log.info("abort failed (%s); starting a new producer", exc)
        self._replace()

    def _replace(self) -> None:
        """Discard the producer (its open transaction with it) and start a new one."""
        self._open = self._renew = False
        self._abort_timeouts = self._offsets_timeouts = 0
        old: Producer | None = self.producer
        self.producer = None
        if old is not None:
            old.discard()
        old = None
        self.producer = self._start()

    def _resume_commit(self, producer: Any) -> None:
        """A commit_transaction that timed out must be retried, not aborted (librdkafka
        refuses the abort while it is in progress). If it now succeeds, the checkpoint is
        committed after all: the loop's rewind reads it back (state and offsets agree)."""
        try:
            self._bounded("commit", lambda: producer.commit_transaction(self.timeout_s))
        except ClientError as exc:
            raise classify(exc, "resuming a timed-out commit failed") from exc
        self._open = False
        log.info("a checkpoint whose commit timed out was committed on retry")

    def close(self) -> None:
        if self._open and self.producer is not None and not self._wedged:
            try:
                self.producer.abort_transaction(min(self.timeout_s, 10.0))
            except ClientError as exc:
                log.warning("abort on close failed: %s", exc)
            self._open = False
