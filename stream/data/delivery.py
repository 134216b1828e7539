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
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    InvalidProducerEpochError,
    KafkaError,
    ProducerFencedError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from stream.data.kafka_io import InfrastructureError

log = logging.getLogger("stream.delivery")
Offsets = dict[TopicPartition, OffsetAndMetadata]
_FENCED = (ProducerFencedError, FencedInstanceIdError, InvalidProducerEpochError)
_GROUP_MOVED = (CommitFailedError, IllegalGenerationError, UnknownMemberIdError,
                RebalanceInProgressError)


class FencedError(RuntimeError):
    """Another instance owns our transactional id or our partitions: stop, don't write."""


def _fenced(exc: BaseException, producer: Any) -> bool:
    """kafka-python reports fencing in several shapes: a typed error on the send path, a
    generic KafkaError naming ProducerFenced from the transactional methods, or only in the
    transaction manager's fatal state. Any of them means: never re-initialise this id, or
    two instances would fence each other forever."""
    if isinstance(exc, _FENCED) or "ProducerFenced" in str(exc):
        return True
    return _manager_fenced(producer, settle_s=0.0)


def _manager_fenced(producer: Any, settle_s: float) -> bool:
    """After an abortable error the producer bumps its epoch (KIP-360); if another instance
    took our id, that bump fails with ProducerFenced. Wait up to `settle_s` for the bump to
    finish so an error mid-bump is not mistaken for (or mistaken as not) fencing."""
    manager = getattr(producer, "_transaction_manager", None)
    if manager is None:
        return False
    deadline = time.monotonic() + settle_s
    while "BUMPING" in str(getattr(manager, "_current_state", "")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return isinstance(getattr(manager, "_last_error", None), _FENCED)


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
        except KafkaError as exc:
            _close_quietly(producer)
            if _fenced(exc, producer):
                raise FencedError(f"fenced while starting: {exc}") from exc
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
        except KafkaError as exc:
            if _fenced(exc, self.producer):
                raise FencedError(str(exc)) from exc
            raise InfrastructureError(f"send failed: {exc}") from exc

    def commit(self, offsets: Offsets) -> None:
        if not offsets and not self._open:
            return
        self._begin()
        try:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
        except KafkaError as exc:
            if _fenced(exc, self.producer):
                raise FencedError(str(exc)) from exc
            if isinstance(exc, _GROUP_MOVED):
                raise GroupMovedError(str(exc)) from exc
            raise InfrastructureError(f"transaction commit failed: {exc}") from exc
        finally:
            self._open = False

    def reset(self) -> None:
        """A new producer with the same transactional id: the broker aborts whatever the
        old one left open, so nothing from the failed checkpoint ever becomes visible."""
        self._open = False
        if _manager_fenced(self.producer, settle_s=self.timeout_s):
            raise FencedError("this instance's producer was fenced by another instance")
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
