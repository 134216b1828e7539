"""At-least-once delivery: a checkpoint's offsets are committed only once every record sent
before it is acknowledged, in checkpoint order, and a failed send fails the checkpoint.

The producer and consumer here are stand-ins that record calls and let the test decide when
delivery reports arrive; the real clients are exercised by tests/integration."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream.errors import FencedError, InfrastructureError
from stream.kafka.delivery import ABORT_ATTEMPTS, AtLeastOnce, ExactlyOnce


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


# -- exactly-once: recovering a transactional producer -----------------------------------------

class FakeTxnProducer:
    """A transactional producer whose calls fail as the test scripts them."""

    created = 0

    def __init__(self) -> None:
        FakeTxnProducer.created += 1
        self.calls: list[str] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.block: set[str] = set()
        self.release = threading.Event()  # ends a blocked call

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.block:
            self.release.wait(30)
        errors = self.fail.get(name)
        if errors:
            raise errors.pop(0)

    def init_transactions(self, _timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, **_: Any) -> None:
        self._call("produce")

    def send_offsets_to_transaction(self, *_: Any) -> None:
        self._call("send_offsets")

    def commit_transaction(self, _timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self._call("abort")

    def purge(self, **_: Any) -> None:
        pass

    def flush(self, _timeout: float) -> int:
        return 0


class FakeGroupConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def _kafka_error(code: int, retriable: bool = False, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, retriable=retriable, fatal=fatal))


def _eos(timeout_s: float = 1.0) -> tuple[ExactlyOnce, list[FakeTxnProducer]]:
    made: list[FakeTxnProducer] = []

    def factory() -> FakeTxnProducer:
        made.append(FakeTxnProducer())
        return made[-1]

    return ExactlyOnce(factory, FakeGroupConsumer(), timeout_s=timeout_s), made


def _failed_commit(delivery: ExactlyOnce, producer: FakeTxnProducer) -> None:
    delivery.send("verdicts", b"k", b"v")
    producer.fail["commit"] = [_kafka_error(KafkaError._TIMED_OUT, retriable=True)]
    with pytest.raises(InfrastructureError):
        delivery.commit([_tp(0, 1)])


def test_a_commit_that_timed_out_is_resumed_not_aborted() -> None:
    delivery, made = _eos()
    _failed_commit(delivery, made[0])
    made[0].fail["abort"] = [_kafka_error(KafkaError._CONFLICT)]
    delivery.reset()
    assert made[0].calls[-2:] == ["abort", "commit"]  # the commit retried, and it went through
    assert len(made) == 1
    delivery.send("verdicts", b"k", b"v2")  # usable again: a new transaction begins
    assert made[0].calls[-2:] == ["begin", "produce"]


def test_aborts_that_keep_timing_out_retire_the_producer() -> None:
    delivery, made = _eos()
    _failed_commit(delivery, made[0])
    made[0].fail["abort"] = [_kafka_error(KafkaError._TIMED_OUT, retriable=True)] * 5
    for _ in range(ABORT_ATTEMPTS - 1):
        with pytest.raises(InfrastructureError, match="abort failed, will retry"):
            delivery.reset()
    assert len(made) == 1
    delivery.reset()  # the last attempt gives up on this producer
    assert len(made) == 2 and made[1].calls == ["init"]
    assert delivery.producer is made[1]


def test_a_call_that_never_returns_wedges_the_producer_and_reset_replaces_it() -> None:
    delivery, made = _eos(timeout_s=0.0)  # the deadline is timeout + 5 s
    delivery.send("verdicts", b"k", b"v")
    made[0].block.add("send_offsets")
    with pytest.raises(InfrastructureError, match="did not return"):
        delivery.commit([_tp(0, 1)])
    delivery.reset()
    made[0].release.set()
    assert len(made) == 2 and made[1].calls == ["init"]
    assert "abort" not in made[0].calls  # nothing more is asked of the stuck producer


def test_a_timed_out_init_is_retried_on_the_same_producer() -> None:
    made: list[FakeTxnProducer] = []

    def factory() -> FakeTxnProducer:
        made.append(FakeTxnProducer())
        if len(made) == 2:  # the replacement cannot reach the coordinator at first
            made[-1].fail["init"] = [_kafka_error(KafkaError._TIMED_OUT, retriable=True)]
        return made[-1]

    delivery = ExactlyOnce(factory, FakeGroupConsumer(), timeout_s=1.0)
    _failed_commit(delivery, made[0])
    made[0].fail["abort"] = [_kafka_error(KafkaError._FATAL, fatal=True)]
    with pytest.raises(InfrastructureError, match="cannot start transactions"):
        delivery.reset()
    delivery.reset()
    # A second replacement started while the first still initialises would fence it.
    assert len(made) == 2 and made[1].calls == ["init", "init"]
    assert delivery.producer is made[1]


def test_fencing_is_reported_as_such() -> None:
    delivery, made = _eos()
    made[0].fail["begin"] = [_kafka_error(KafkaError._FENCED, fatal=True)]
    with pytest.raises(FencedError):
        delivery.send("verdicts", b"k", b"v")
