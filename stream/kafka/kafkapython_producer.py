"""The kafka-python producer: idempotent, acks=all, murmur2 keys, optionally transactional.

What the protocol asks and kafka-python 3.0 does differently, and what this adapter does:

- Delivery callbacks: kafka-python resolves a send's future on its sender thread and runs
  the future's callbacks there. The protocol runs them inside `poll`/`flush` on the caller's
  thread, so each outcome is queued (a deque: thread-safe appends) and served there.
- Queue full: kafka-python 3 has no bounded buffer (`buffer_memory` is gone,
  dpkp/kafka-python#2580, #3047); its accumulator grows without limit. This adapter bounds
  the records sent and not yet served (`max_queued`, librdkafka's default 100,000) and raises
  ClientError(kind="queue_full") beyond it, at once.
- `max_block_ms` bounds the metadata wait of `send` and each wait of `init_transactions`;
  it is short (100 ms) so neither outlives its caller's timeout. A topic the producer has not
  written yet gets its metadata first, waited for up to the connection timeout.
- Transactions: kafka-python's `send_offsets_to_transaction`, `commit_transaction` and
  `abort_transaction` wait without a timeout (as the Java client did before KAFKA-7763 and
  KAFKA-10309). This adapter issues the same transaction-manager request and waits for its
  result with `timeout_s`; a call that times out keeps going, and the next call of the same
  kind waits for it instead of starting another (kafka-python would refuse the transition).
  An abort or begin while a timed-out commit is still running raises kind="in_progress".
- A record of a transaction refused for its size (MessageSizeTooLargeError in its delivery
  report): kafka-python 3.0 splits the batch, bumps the epoch and may then never complete the
  commit. The wait for a commit therefore stops as soon as such a refusal is reported, and
  raises kind="too_large": the caller replaces the producer and finds the record.
- `discard` force-closes the sender: `close(timeout=0)` alone raises from its flush while
  records are pending and leaves the sender thread running (and delivering).

kafka-python internals used (3.0.x): `_transaction_manager` (its requests, state and last
error: after an error kafka-python raises a generic KafkaError naming it) and `_sender`
(`wakeup`, `force_close`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from kafka import KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka import errors as kerr

from stream.kafka.classify import ClientError
from stream.kafka.clients import DeliveryCallback
from stream.kafka.kafkapython_errors import WATCH, client_error
from stream.kafka.records import Headers, Source

log = logging.getLogger("stream.kafka")
MAX_QUEUED = 100_000
Report = tuple[DeliveryCallback | None, ClientError | None]


class KafkaPythonProducer:
    """A durable producer: every record is on all in-sync replicas before it counts."""

    def __init__(self, options: dict[str, Any], metadata_timeout_s: float,
                 max_queued: int = MAX_QUEUED) -> None:
        started = time.monotonic()
        try:
            self._producer = KafkaProducer(**options)
        except kerr.KafkaError as exc:
            error = client_error(exc, what="cannot create a kafka-python producer")
            raise WATCH.explain(error, since=started) from None
        self._tm: Any = self._producer._transaction_manager
        self._metadata_timeout_s = metadata_timeout_s
        self.max_queued = max_queued
        self._known: set[str] = set()
        self._reports: deque[Report] = deque()
        self._ready = threading.Event()
        self._waiting = False  # poll/flush waits for a report: the sender must wake it
        self._callback: DeliveryCallback | None = None
        self._report: Callable[[Any], None] = partial(self._delivered, None)
        self._sent = 0
        self._served = 0
        self._pending: tuple[str, Any] | None = None  # a timed-out transactional call
        self._too_large: ClientError | None = None  # a size refusal in this transaction

    # -- sending and delivery reports ------------------------------------------------------
    def unacknowledged(self) -> int:
        """Records sent whose delivery report has not been served yet."""
        return self._sent - self._served - len(self._reports)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        if self._sent - self._served >= self.max_queued:
            raise ClientError(f"the producer's local queue is full ({self.max_queued} records "
                              "not yet acknowledged and served)", kind="queue_full",
                              retriable=True)
        if topic not in self._known:
            self._wait_for_topic(topic)
        try:
            future = self._producer.send(topic, value=value, key=key, partition=partition,
                                         headers=list(headers) if headers else None)
        except (kerr.KafkaError, ValueError) as exc:
            raise self._error(exc, f"send to {topic}") from None
        self._sent += 1
        if on_delivery is not self._callback:  # one partial per callback, not per record
            self._callback, self._report = on_delivery, partial(self._delivered, on_delivery)
        future.add_callback(self._report)
        future.add_errback(self._report)

    def _delivered(self, callback: DeliveryCallback | None, outcome: Any) -> None:
        """On kafka-python's sender thread (or here, for a future failed at once)."""
        error = self._error(outcome, "delivery") if isinstance(outcome, BaseException) else None
        if error is not None and error.kind == "too_large":
            self._too_large = error
        self._reports.append((callback, error))
        if self._waiting:
            self._ready.set()

    def _wait(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for a report to come in (none is in yet)."""
        self._waiting = True
        self._ready.clear()
        if not self._reports:  # appended before `_waiting` was seen: not waited for
            self._ready.wait(timeout_s)
        self._waiting = False

    def _wait_for_topic(self, topic: str) -> None:
        deadline = time.monotonic() + self._metadata_timeout_s
        while True:
            try:
                self._producer.partitions_for(topic)
                self._known.add(topic)
                return
            except kerr.KafkaTimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise client_error(exc, what=f"metadata of {topic}") from None
            except (kerr.KafkaError, ValueError) as exc:
                raise client_error(exc, what=f"metadata of {topic}") from None

    def _serve(self) -> None:
        reports = self._reports
        while reports:
            callback, error = reports.popleft()
            self._served += 1
            if callback is not None:
                callback(error)

    def poll(self, timeout_s: float) -> None:
        """Serve the delivery reports that are in, waiting up to `timeout_s` for one."""
        if not self._reports and timeout_s > 0:
            self._wait(timeout_s)
        self._serve()

    def flush(self, timeout_s: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:  # kafka-python's timeout is per batch; ours is total (the loop below)
            self._producer.flush(timeout=max(0.0, timeout_s))
        except kerr.KafkaTimeoutError:
            pass
        except kerr.KafkaError as exc:
            log.debug("flush: %s", exc)
        self._serve()
        while self.unacknowledged() > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self._reports:
                self._wait(min(left, 0.05))
            self._serve()
        return self.unacknowledged()

    # -- transactions ----------------------------------------------------------------------
    def init_transactions(self, timeout_s: float) -> None:
        """kafka-python waits `max_block_ms` per call and a retry after its timeout resumes
        the same attempt: call it until `timeout_s` is spent."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._producer.init_transactions()
                return
            except kerr.KafkaTimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise client_error(exc, what="init_transactions") from None
            except kerr.KafkaError as exc:
                raise self._error(exc, "init_transactions") from None

    def begin_transaction(self) -> None:
        self._refuse_while_committing("begin_transaction")
        self._too_large = None
        try:
            self._producer.begin_transaction()
        except kerr.KafkaError as exc:
            raise self._error(exc, "begin_transaction") from None

    def send_offsets_to_transaction(self, offsets: Mapping[Source, int], group_metadata: object,
                                    timeout_s: float) -> None:
        data = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                for (t, p), o in offsets.items()}
        self._transactional("send_offsets_to_transaction", timeout_s,
                            lambda: self._tm.send_offsets_to_transaction(data, group_metadata))

    def commit_transaction(self, timeout_s: float) -> None:
        self._transactional("commit_transaction", timeout_s, lambda: self._tm.begin_commit())

    def abort_transaction(self, timeout_s: float) -> None:
        self._refuse_while_committing("abort_transaction")
        self._transactional("abort_transaction", timeout_s, lambda: self._tm.begin_abort())

    def _refuse_while_committing(self, what: str) -> None:
        """A timed-out commit must be retried, never aborted (as librdkafka's _CONFLICT);
        one that completed since is forgotten (a new transaction starts)."""
        pending = self._pending
        if pending is None or pending[0] != "commit_transaction":
            return
        if pending[1].is_done:
            self._pending = None
        else:
            raise ClientError(f"{what}: a timed-out commit_transaction is still in progress; "
                              "retry the commit", kind="in_progress", retriable=True)

    def _transactional(self, what: str, timeout_s: float, start: Callable[[], Any]) -> None:
        """Issue (or resume) one transactional request and wait for it up to `timeout_s`."""
        if self._tm is None or not self._tm.is_transactional():
            raise ClientError(f"{what}: this producer has no transactional id")
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == what:
            result = pending[1]
        else:
            try:
                result = start()
            except (kerr.KafkaError, TypeError, ValueError) as exc:
                raise self._error(exc, what) from None
            self._producer._sender.wakeup()
        try:
            done = self._wait_for(result, what, timeout_s)
        except kerr.KafkaError as exc:
            raise self._error(exc, what) from None
        if not done:
            self._pending = (what, result)
            raise ClientError(f"{what} did not complete within {timeout_s:g}s (still going on: "
                              "retry the same call)", kind="timed_out", retriable=True)

    def _wait_for(self, result: Any, what: str, timeout_s: float) -> bool:
        """Wait for a transactional request, in slices: a commit stops waiting once a record
        of its transaction was refused for its size (module docstring)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            left = deadline - time.monotonic()
            if result.wait(timeout_ms=max(0.0, min(left, 0.1)) * 1000):
                return True
            refused = self._too_large
            if refused is not None and what == "commit_transaction":
                self._pending = None
                raise ClientError(f"{what}: a record of the transaction was refused: {refused}",
                                  kind="too_large", code=refused.code)
            if left <= 0.1:
                return False

    def _error(self, exc: BaseException, what: str) -> ClientError:
        """`exc` classified with the transaction manager's state: once it holds an error,
        kafka-python raises a generic KafkaError and the real cause is its last error."""
        tm = self._tm
        if tm is None or not tm.has_error():
            return client_error(exc, what=what)
        fatal, cause = tm.has_fatal_error(), tm.last_error
        if cause is None or cause is exc:
            return client_error(exc, fatal=fatal, what=what)
        known = client_error(cause, fatal=fatal)
        return ClientError(f"{what}: {exc} ({cause})", kind=known.kind,
                           retriable=known.retriable, fatal=fatal, code=known.code)

    # -- shutdown --------------------------------------------------------------------------
    def discard(self) -> None:
        """Drop the producer at once: what it holds is failed, nothing more is sent."""
        try:
            self._producer._sender.force_close()
            self._producer.close(timeout=0)
        except Exception as exc:  # noqa: BLE001 - a broken producer must not mask the error
            log.debug("discarding the producer: %s", exc)

    def close(self, timeout_s: float) -> None:
        """Deliver what it can within `timeout_s`, then stop; never raises (what is still
        unacknowledged then is dropped, as `discard` does)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            if self.flush(timeout_s) == 0:
                self._producer.close(timeout=max(0.0, deadline - time.monotonic()))
                return
        except Exception as exc:  # noqa: BLE001 - a closing producer has nothing to report
            log.debug("closing the producer: %s", exc)
        self.discard()
