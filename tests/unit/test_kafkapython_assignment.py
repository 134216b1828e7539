"""The kafka-python adapter's assignment listener without a broker: every assignment starts
from the committed offsets, and the scorer hears of it even when they cannot be read."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka import errors as kerr

from stream.kafka.classify import ClientError
from stream.kafka.kafkapython_consumer import _FromCommitted
from stream.kafka.records import Source

SOURCES: list[Source] = [("labels", 0), ("tx", 0), ("tx", 1)]


class Consumer:
    """The KafkaConsumer calls the listener makes: the committed offsets, and seeks."""

    def __init__(self, committed: dict[TopicPartition, Any] | Exception) -> None:
        self.seeks: list[tuple[TopicPartition, int | str]] = []
        self.order: list[str] = []

        def fetch_committed_offsets(tps: list[TopicPartition], timeout_ms: int) -> Any:
            self.order.append("committed")
            if isinstance(committed, Exception):
                raise committed
            return committed
        self._coordinator = SimpleNamespace(fetch_committed_offsets=fetch_committed_offsets)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks.append((tp, "beginning"))


class Listener:
    def __init__(self, consumer: Consumer) -> None:
        self.assigned: list[list[Source]] = []
        self._consumer = consumer

    def on_assigned(self, sources: list[Source]) -> None:
        self._consumer.order.append("listener")
        self.assigned.append(sources)

    def on_revoked(self, sources: list[Source]) -> None:
        raise AssertionError("not expected")

    def on_lost(self, sources: list[Source]) -> None:
        raise AssertionError("not expected")


def test_assignment_seeks_to_committed_offsets_then_tells_the_scorer() -> None:
    consumer = Consumer({TopicPartition("tx", 0): OffsetAndMetadata(42, "", -1),
                         TopicPartition("tx", 1): OffsetAndMetadata(-1, "", -1)})
    listener = Listener(consumer)
    _FromCommitted(consumer, listener, timeout_s=1.0).on_assigned(SOURCES)  # type: ignore[arg-type]
    assert consumer.seeks == [(TopicPartition("labels", 0), "beginning"),
                              (TopicPartition("tx", 0), 42),
                              (TopicPartition("tx", 1), "beginning")]
    assert listener.assigned == [SOURCES]
    assert consumer.order == ["committed", "listener"]


def test_unreadable_committed_offsets_still_tell_the_scorer_then_raise() -> None:
    """A zombie's open transaction holds its offsets back ("unstable") until it ends, so a
    take-over can time out reading them. The scorer must hear of the assignment all the
    same (before this, it never did: its intake did not track the partitions and health
    said none were assigned); the error then makes the loop rewind to committed offsets."""
    consumer = Consumer(kerr.KafkaTimeoutError())
    listener = Listener(consumer)
    with pytest.raises(ClientError, match="committed offsets"):
        _FromCommitted(consumer, listener, timeout_s=1.0).on_assigned(SOURCES)  # type: ignore[arg-type]
    assert listener.assigned == [SOURCES]
    assert consumer.seeks == []  # the rewind seeks, with offsets it could read
    assert consumer.order == ["committed", "listener"]
