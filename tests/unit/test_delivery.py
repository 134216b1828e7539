"""At-least-once delivery: a checkpoint's offsets are committed only once every record sent
before it is acknowledged, in checkpoint order, and a failed send fails the checkpoint.

The producer and consumer here are stand-ins that record calls and let the test decide when
delivery reports arrive; the real clients are exercised by tests/integration."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from stream.data.delivery import AtLeastOnce
from stream.data.kafka_io import InfrastructureError


class FakeProducer:
    """Holds each record's delivery callback until the test acknowledges it."""

    def __init__(self) -> None:
        self.unacked: list[tuple[Any, Any]] = []
        self.sent: list[tuple[str, bytes | None]] = []

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                partition: int | None = None, on_delivery: Any = None, **_: Any) -> None:
        self.sent.append((topic, value))
        self.unacked.append((on_delivery, value))

    def ack(self, n: int | None = None, error: KafkaError | None = None) -> None:
        count = len(self.unacked) if n is None else n
        for callback, value in self.unacked[:count]:
            callback(error, value)
        del self.unacked[:count]

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        self.ack()
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets},
                             asynchronous))


def _delivery() -> tuple[AtLeastOnce, FakeProducer, FakeConsumer]:
    producer, consumer = FakeProducer(), FakeConsumer()
    return AtLeastOnce(lambda: producer, consumer, timeout_s=1.0), producer, consumer


def _tp(partition: int, offset: int) -> TopicPartition:
    return TopicPartition("tx", partition, offset)


def test_offsets_wait_for_every_acknowledgement_of_their_checkpoint() -> None:
    delivery, producer, consumer = _delivery()
    delivery.send("verdicts", b"k", b"v1")
    delivery.send("verdicts", b"k", b"v2")
    delivery.commit([_tp(0, 2)], wait=False)
    assert consumer.commits == []  # nothing acknowledged yet: nothing committed
    producer.ack(1)
    delivery.commit([], wait=False)
    assert consumer.commits == []  # one of the two still in flight
    producer.ack(1)
    delivery.commit([], wait=False)
    assert consumer.commits == [({("tx", 0): 2}, True)]


def test_a_later_checkpoint_is_never_committed_before_an_earlier_one() -> None:
    delivery, producer, consumer = _delivery()
    delivery.send("verdicts", b"k", b"old")
    delivery.commit([_tp(0, 1)], wait=False)
    delivery.send("verdicts", b"k", b"new")
    delivery.commit([_tp(0, 2), _tp(1, 5)], wait=False)
    # Acknowledge the newer record only: the older checkpoint still blocks both.
    callback, value = producer.unacked.pop(1)
    callback(None, value)
    delivery.commit([], wait=False)
    assert consumer.commits == []
    producer.ack()
    delivery.commit([], wait=False)
    assert consumer.commits == [({("tx", 0): 2, ("tx", 1): 5}, True)]


def test_waiting_commit_flushes_and_commits_synchronously() -> None:
    delivery, _producer, consumer = _delivery()
    delivery.send("verdicts", b"k", b"v")
    delivery.commit([_tp(3, 10)], wait=True)
    assert consumer.commits == [({("tx", 3): 10}, False)]


def test_a_failed_send_fails_the_checkpoint_and_commits_nothing() -> None:
    delivery, producer, consumer = _delivery()
    delivery.send("verdicts", b"k", b"v")
    delivery.commit([_tp(0, 1)], wait=False)
    producer.ack(error=KafkaError(KafkaError._MSG_TIMED_OUT))
    with pytest.raises(InfrastructureError, match="1 sends failed"):
        delivery.commit([_tp(0, 2)], wait=False)
    assert consumer.commits == []


def test_reset_forgets_unacknowledged_checkpoints() -> None:
    delivery, producer, consumer = _delivery()
    delivery.send("verdicts", b"k", b"v")
    delivery.commit([_tp(0, 1)], wait=False)
    delivery.reset()
    delivery.commit([_tp(0, 7)], wait=True)  # a checkpoint after the rewind, nothing sent
    assert consumer.commits == [({("tx", 0): 7}, False)]
