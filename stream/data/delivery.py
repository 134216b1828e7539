"""How outputs and consumer offsets become durable together: the delivery guarantee.

`ExactlyOnce` puts verdicts, dead letters, changelog records and the consumed offsets in one
Kafka transaction per checkpoint (KIP-447: the offsets carry the consumer's group metadata,
so a zombie instance that lost its partitions is fenced by the broker). A crash aborts the
open transaction: read_committed readers never see its verdicts, and the restarted instance
restores state and offsets from the same committed checkpoint.

`AtLeastOnce` flushes and waits for every acknowledgement before committing offsets: a
crash can repeat verdicts, never lose one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    KafkaError,
    ProducerFencedError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from stream.data.kafka_io import InfrastructureError

log = logging.getLogger("stream.delivery")
Offsets = dict[TopicPartition, OffsetAndMetadata]
_FENCED = (ProducerFencedError, FencedInstanceIdError)
_GROUP_MOVED = (CommitFailedError, IllegalGenerationError, UnknownMemberIdError,
                RebalanceInProgressError)


class FencedError(RuntimeError):
    """Another instance owns our transactional id or our partitions: stop, don't write."""


class GroupMovedError(RuntimeError):
    """The group rebalanced under us: this checkpoint's work will be redone by the owner."""


class AtLeastOnce:
    """Send freely; at commit, flush, check every send, then commit the offsets."""

    transactional = False

    def __init__(self, producer_factory: Callable[[], Any], consumer: Any,
                 timeout_s: float) -> None:
        self._factory = producer_factory
        self.producer = producer_factory()
        self.consumer = consumer
        self.timeout_s = timeout_s
        self._futures: list[Any] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: list[tuple[str, bytes]] | None = None
             ) -> None:
        self._futures.append(self.producer.send(topic, key=key, value=value,
                                                partition=partition, headers=headers))

    def commit(self, offsets: Offsets) -> None:
        try:
            self.producer.flush(timeout=self.timeout_s)
        except KafkaError as exc:
            raise InfrastructureError(f"flush failed: {exc}") from exc
        failed = [f for f in self._futures if f.failed()]
        self._futures.clear()
        if failed:
            raise InfrastructureError(f"{len(failed)} sends failed: {failed[0].exception}")
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except _GROUP_MOVED as exc:
            raise GroupMovedError(str(exc)) from exc
        except KafkaError as exc:
            raise InfrastructureError(f"offset commit failed: {exc}") from exc

    def reset(self) -> None:
        """After a failure: drop unsent output (it will be redone) and start a new producer."""
        self._futures.clear()
        _close_quietly(self.producer)
        self.producer = self._factory()

    def close(self) -> None:
        _close_quietly(self.producer, timeout=10)


class ExactlyOnce:
    """One transaction per checkpoint: outputs, changelog and offsets commit or abort together."""

    transactional = True

    def __init__(self, producer_factory: Callable[[], Any], consumer: Any,
                 timeout_s: float) -> None:
        self._factory = producer_factory
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.producer = self._start()
        self._open = False

    def _start(self) -> Any:
        producer = self._factory()
        try:
            producer.init_transactions()
        except _FENCED as exc:
            raise FencedError(f"fenced while starting: {exc}") from exc
        except KafkaError as exc:
            _close_quietly(producer)
            raise InfrastructureError(f"cannot start transactions: {exc}") from exc
        return producer

    def _begin(self) -> None:
        if not self._open:
            self.producer.begin_transaction()
            self._open = True

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: list[tuple[str, bytes]] | None = None
             ) -> None:
        self._begin()
        try:
            self.producer.send(topic, key=key, value=value, partition=partition,
                               headers=headers)
        except _FENCED as exc:
            raise FencedError(str(exc)) from exc
        except KafkaError as exc:
            raise InfrastructureError(f"send failed: {exc}") from exc

    def commit(self, offsets: Offsets) -> None:
        if not offsets and not self._open:
            return
        self._begin()
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
        except _FENCED as exc:
            raise FencedError(str(exc)) from exc
        except _GROUP_MOVED as exc:
            raise GroupMovedError(str(exc)) from exc
        except KafkaError as exc:
            raise InfrastructureError(f"transaction commit failed: {exc}") from exc
        finally:
            self._open = False

    def reset(self) -> None:
        """A new producer with the same transactional id: the broker aborts whatever the
        old one left open, so nothing from the failed checkpoint ever becomes visible."""
        self._open = False
        _close_quietly(self.producer)
        self.producer = self._start()

    def close(self) -> None:
        if self._open:
            try:
                self.producer.abort_transaction()
            except KafkaError as exc:
                log.warning("abort on close failed: %s", exc)
            self._open = False
        _close_quietly(self.producer, timeout=10)


def _close_quietly(producer: Any, timeout: float = 0) -> None:
    try:
        producer.close(timeout=timeout)
    except Exception as exc:  # closing a broken producer must not mask the real error
        log.debug("producer close failed: %s", exc)
