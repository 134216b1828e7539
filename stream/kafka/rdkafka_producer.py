"""The librdkafka producer: idempotent, acks=all, murmur2 keys, optionally transactional.

Delivery reports are served by `poll`/`flush` on the caller's thread, where librdkafka runs
its callbacks; each one gets a ClientError or None, never a client-specific object.

A record of a transaction refused by the broker for its size (the topic's max.message.bytes
is below ours) fails the transaction asynchronously: the calls that follow report only
librdkafka's generic `_STATE` ("Erroneous state"), which would read as a lost group. A
transactional producer therefore hears its failed deliveries (only those:
`delivery.report.only.error`), and a later failure of the same transaction is reported as
kind="too_large", so the caller replaces the producer and finds the record, as with
kafka-python.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as _Producer

from stream.config import Settings
from stream.kafka.classify import ClientError, FailureWatch
from stream.kafka.clients import DeliveryCallback
from stream.kafka.rdkafka import _tp, client_error, connection_config, explained
from stream.kafka.records import Headers, Source

# librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks (by key, murmur2 here).
UNASSIGNED = -1


def _report(callback: DeliveryCallback) -> Any:
    def delivered(error: KafkaError | None, _message: Any) -> None:
        callback(None if error is None else client_error(error))
    return delivered


class RdkafkaProducer:
    """A durable producer: every record is on all in-sync replicas before it counts."""

    def __init__(self, settings: Settings, transactional_id: str | None = None,
                 linger_ms: float = 2.0, max_queued: int = 100_000) -> None:
        self._watch = FailureWatch()
        config: dict[str, Any] = {
            **connection_config(settings, self._watch),
            "acks": "all",
            "enable.idempotence": True,
            # Batches leave after 2 ms: latency; at full load batches fill before that anyway.
            "linger.ms": linger_ms,
            # The Java client's (and kafka-python's) key hash, not librdkafka's CRC32.
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": max_queued,
            # The largest record it sends: a larger one is refused by `produce` at once
            # (MSG_SIZE_TOO_LARGE, kind too_large), before it can fail a transaction.
            "message.max.bytes": settings.max_message_bytes,
        }
        self._too_large: ClientError | None = None  # a size refusal in this transaction
        if transactional_id is not None:
            config["transactional.id"] = transactional_id
            config["transaction.timeout.ms"] = settings.transaction_timeout_ms
            config["on_delivery"] = self._failed_delivery
            config["delivery.report.only.error"] = True
        self._transactional = transactional_id is not None
        self._producer = _Producer(config)
        # One wrapper per callback object, reused while the caller keeps passing the same one
        # (a checkpoint epoch's): no closure allocated per record. The same for headers,
        # which librdkafka's binding takes as a list.
        self._callback: DeliveryCallback | None = None
        self._wrapped: Any = None
        self._headers: Headers | None = None
        self._header_list: list[tuple[str, str | bytes | None]] | None = None

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        """Enqueue one record, by position: the binding parses keyword arguments one by one,
        which with the per-call dict made a record cost about 4 us to enqueue instead of 0.7
        (two records an event at-least-once; docs/benchmark.md "Sends by position, verdicts
        without the dataclass")."""
        if on_delivery is not self._callback:
            self._callback = on_delivery
            self._wrapped = None if on_delivery is None else _report(on_delivery)
        where = UNASSIGNED if partition is None else partition
        try:
            if headers:
                if headers is not self._headers:
                    self._headers, self._header_list = headers, list(headers)
                self._producer.produce(topic, value, key, where, self._wrapped,
                                       headers=self._header_list)
            else:  # a None callback is the producer's default one (the binding's rule)
                self._producer.produce(topic, value, key, where, self._wrapped)
        except BufferError:
            raise ClientError("the producer's local queue is full", kind="queue_full",
                              retriable=True) from None
        except KafkaException as exc:
            raise self._in_transaction(client_error(exc)) from None

    def _failed_delivery(self, error: KafkaError | None, _message: Any) -> None:
        """A transactional producer's failed delivery (served by poll or flush)."""
        if error is not None:
            failure = client_error(error)
            if failure.kind == "too_large":
                self._too_large = failure

    def _in_transaction(self, error: ClientError) -> ClientError:
        """`error`, or the size refusal that failed this transaction before it (module
        docstring): the delivery reports in are served first, to hear it."""
        if not self._transactional or error.kind == "too_large":
            return error
        if self._too_large is None:
            try:
                self._producer.poll(0)
            except Exception:  # noqa: BLE001 - only to hear the reports; the error stands
                return error
        refused = self._too_large
        if refused is None:
            return error
        return ClientError(f"{error} (a record of the transaction was refused: {refused})",
                           kind="too_large", code=refused.code)

    def _refused(self) -> None:
        """librdkafka retries a refused login until each record's delivery timeout (minutes):
        stop at once instead, as the Java client does (its callback ran in poll or flush)."""
        failure = self._watch.auth_failure()
        if failure is not None:
            raise ClientError(f"authentication failed: {failure}", kind="auth")

    def poll(self, timeout_s: float) -> None:
        self._producer.poll(timeout_s)
        self._refused()

    def flush(self, timeout_s: float) -> int:
        """Waits in slices, so a refused login (heard by the flush itself) ends it early."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = int(self._producer.flush(max(0.0, min(0.5, deadline - time.monotonic()))))
            if not left:
                return 0
            self._refused()
            if time.monotonic() >= deadline:
                return left

    def init_transactions(self, timeout_s: float) -> None:
        try:
            self._producer.init_transactions(timeout_s)
        except KafkaException as exc:
            raise explained(client_error(exc), self._watch,
                            lambda: self._producer.poll(0)) from None

    def begin_transaction(self) -> None:
        self._too_large = None
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise client_error(exc) from None

    def send_offsets_to_transaction(self, offsets: Mapping[Source, int], group_metadata: object,
                                    timeout_s: float) -> None:
        try:
            self._producer.send_offsets_to_transaction(
                [_tp(s, o) for s, o in offsets.items()], group_metadata, timeout_s)
        except KafkaException as exc:
            raise self._in_transaction(client_error(exc)) from None

    def commit_transaction(self, timeout_s: float) -> None:
        try:
            self._producer.commit_transaction(timeout_s)
        except KafkaException as exc:
            raise self._in_transaction(client_error(exc)) from None

    def abort_transaction(self, timeout_s: float) -> None:
        try:
            self._producer.abort_transaction(timeout_s)
        except KafkaException as exc:
            raise client_error(exc) from None

    def discard(self) -> None:
        """Purge what it still holds so it is destroyed at once (a broken producer must not
        mask the real error, so failures here are ignored)."""
        try:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.flush(0)
        except Exception:  # noqa: BLE001 - best effort on a producer being replaced
            pass

    def close(self, timeout_s: float) -> None:
        try:
            self._producer.flush(timeout_s)
        except KafkaException:
            pass
