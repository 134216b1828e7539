"""An idle at-least-once scorer commits its last checkpoint's offsets once they are
acknowledged (issue 13): a checkpoint's offsets used to be committed by a later checkpoint
only, and an idle scorer makes none. So the group showed that checkpoint's records as lag for
as long as no input came, a restart after a crash did them again, and a lost membership (a
broker restart longer than the session timeout) rewound the scorer.

The loop runs on stream.kafka.testing's in-memory consumer and producer: three transactions
in the first poll, then nothing; the producer's delivery reports arrive in a later poll."""

from __future__ import annotations

from loop_support import LABELS, TX, Checkpoints, Clients, TransactionalLog, assign_once, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import AtLeastOnce, ExactlyOnce
from stream.kafka.records import Polled, Record, Source
from stream.kafka.testing import MemoryConsumer, MemoryProducer
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop


class OneBatchThenIdle(MemoryConsumer):
    """`records` in the first poll, then empty polls; from poll `ack_at` on, every record
    sent so far is acknowledged; the loop is stopped at poll `stop_at`."""

    def __init__(self, records: list[Record], producer: MemoryProducer, ack_at: int,
                 stop_at: int) -> None:
        super().__init__()
        self.records, self.producer = records, producer
        self.ack_at, self.stop_at = ack_at, stop_at
        self.asked = 0
        self.loop: ScorerLoop | None = None
        self.commits_when_stopped: list[tuple[dict[Source, int], bool]] = []

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        assign_once(self, [TX, LABELS])
        self.asked += 1
        if self.asked == 1:
            return Polled(list(self.records), [LABELS])
        if self.asked >= self.ack_at:
            self.producer.ack()
        if self.asked == self.stop_at and self.loop is not None:
            self.commits_when_stopped = list(self.commits)
            self.loop.stop()
        return Polled([], [TX, LABELS])


def _idle_run(ack_at: int, pending: bool = False) -> OneBatchThenIdle:
    """Three transactions, a checkpoint whenever the loop is idle, then twenty idle polls."""
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                             output_topic="verdicts", guarantee="at-least-once",
                             changelog=False, checkpoint_interval_ms=0.0, max_poll_records=3,
                             **PER_PARTITION)
    producer = MemoryProducer()
    consumer = OneBatchThenIdle(tx_records(3), producer, ack_at=ack_at, stop_at=20)
    consumer.pending = pending
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()),
                      Clients(TransactionalLog(set())),  # type: ignore[arg-type]
                      consumer, AtLeastOnce(lambda: producer, consumer, timeout_s=1.0))
    consumer.loop = loop
    loop.run()
    return consumer


def test_an_idle_scorer_commits_its_last_checkpoint_once_acknowledged() -> None:
    consumer = _idle_run(ack_at=5)
    assert ({TX: 3}, True) in consumer.commits_when_stopped  # while idle, not at the stop
    assert consumer.commits_when_stopped.count(({TX: 3}, True)) == 1  # once, not every poll


def test_nothing_is_committed_while_the_sends_are_unacknowledged() -> None:
    consumer = _idle_run(ack_at=1_000)
    assert all(TX not in offsets for offsets, _ in consumer.commits_when_stopped)


def test_an_unheard_commit_leaves_the_delivery_unsettled() -> None:
    """The commit was asked for, but the group's answer has not been heard (or was a
    failure): a lost membership must still rewind."""
    producer, consumer = MemoryProducer(), MemoryConsumer()
    delivery = AtLeastOnce(lambda: producer, consumer, timeout_s=1.0)
    delivery.send("verdicts", b"k", b"v")
    delivery.commit({TX: 1}, wait=False)
    producer.ack()
    delivery.settle()
    assert consumer.commits == [({TX: 1}, True)]
    consumer.pending = True
    assert not delivery.settled
    consumer.pending = False
    assert delivery.settled


def test_without_a_changelog_an_idle_scorer_stops_checkpointing() -> None:
    """With `changelog = false` the partitions' changes are never written, and they used to
    stay marked as changed: an idle scorer checkpointed at every poll."""
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                             output_topic="verdicts", changelog=False,
                             checkpoint_interval_ms=0.0, max_poll_records=3, **PER_PARTITION)
    producer = Checkpoints()
    consumer = OneBatchThenIdle(tx_records(3), producer, ack_at=1, stop_at=20)
    registry = CollectorRegistry()
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(registry), Clients(producer),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    consumer.loop = loop
    loop.run()
    assert producer.sizes == [3]
    # The batch's checkpoint, and the final one when stopped (an empty transaction is not
    # committed); none in between.
    assert registry.get_sample_value("fraudstream_commits_total", {"result": "ok"}) == 2
