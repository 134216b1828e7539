"""A lost group membership rewinds only what is uncommitted (issue 13, the soak's two rewinds
after a broker restart): a checkpoint fails in the outage, the rewind rebuilds every
partition, and the first poll after it reports the partitions lost. The state is then the
last checkpoint's already, and a second rewind only rebuilt it again.

The scorer's loop runs on stream.kafka.testing's in-memory consumer and producer
(loop_support.py): a seek, and an assignment after a loss, start the partition where the
group says (the committed offset), as a real consumer does."""

from __future__ import annotations

import orjson
from loop_support import TX, Clients, LogConsumer, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import AtLeastOnce, ExactlyOnce
from stream.kafka.records import Record
from stream.kafka.testing import MemoryConsumer, MemoryProducer
from stream.observability.metrics import Metrics
from stream.serving.loop import RunResult, ScorerLoop


def _lose_at(consumer: LogConsumer, producer: TransactionalLog, poll: int) -> None:
    """At poll `poll` the group reports both partitions lost and, rejoined, assigns them
    again, from their committed offsets."""

    def lose(polls: int) -> None:
        listener = consumer.listener
        if polls != poll or not consumer.assigned or listener is None:
            return
        sources, consumer.assigned = list(consumer.assigned), []
        listener.on_lost(sources)
        consumer.assigned = sources
        consumer.position = producer.offsets.get(TX, 0)
        listener.on_assigned(list(sources))

    consumer.on_poll = lose


def _run(fail_commits: set[int], lose_at: int,
         checkpoint_interval_ms: float) -> tuple[RunResult, TransactionalLog, list[Record]]:
    """Six transactions in polls of three under exactly-once, a budget of six."""
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                             output_topic="verdicts", max_events=6, changelog=False,
                             checkpoint_interval_ms=checkpoint_interval_ms, max_poll_records=3,
                             **PER_PARTITION)
    records = tx_records(6)
    producer = TransactionalLog(fail_commits)
    consumer = LogConsumer(records)
    _lose_at(consumer, producer, lose_at)
    delivery = ExactlyOnce(lambda: producer, consumer, timeout_s=1.0)
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()), Clients(producer),  # type: ignore[arg-type]
                      consumer, delivery)
    return loop.run(), producer, records


def _ids(values: list[bytes | None]) -> list[str]:
    return sorted(orjson.loads(v)["transaction_id"] for v in values if v is not None)


def test_a_loss_reported_right_after_a_rewind_does_not_rewind_again() -> None:
    """The first checkpoint's commit fails (the outage), the loop rewinds, and its next poll
    reports the partitions lost and assigns them again: one rewind, not two, and every
    verdict committed once."""
    result, producer, records = _run(fail_commits={1}, lose_at=2, checkpoint_interval_ms=0.0)
    assert result.recoveries == 1
    assert producer.offsets == {TX: 6}
    assert _ids(producer.verdicts) == _ids([r.value for r in records])


def test_a_loss_with_work_uncommitted_still_rewinds() -> None:
    """Three records scored in an open transaction when the loss is reported: they may not
    be committed (the partitions are someone else's), so the loop aborts and redoes them,
    and each verdict is committed once."""
    result, producer, records = _run(fail_commits=set(), lose_at=2,
                                     checkpoint_interval_ms=3_600_000.0)
    assert result.recoveries == 1
    assert producer.offsets == {TX: 6}
    assert _ids(producer.verdicts) == _ids([r.value for r in records])


def test_a_loss_while_everything_is_committed_needs_no_rewind() -> None:
    """A checkpoint after every poll: the loss at the second poll finds nothing uncommitted
    (as for an idle scorer whose broker was away longer than the session timeout)."""
    result, producer, records = _run(fail_commits=set(), lose_at=2, checkpoint_interval_ms=0.0)
    assert result.recoveries == 0
    assert producer.offsets == {TX: 6}
    assert _ids(producer.verdicts) == _ids([r.value for r in records])
    # The next transaction began on a new producer (ExactlyOnce.renew): after a broker
    # restart librdkafka's can hang on AddOffsetsToTxn with the coordinator it had.
    assert producer.calls.count("init") == 2


def test_what_each_guarantee_calls_settled() -> None:
    """At-least-once: nothing sent since the last checkpoint and every closed epoch's offsets
    committed. Exactly-once: no transaction open."""
    producer = MemoryProducer()
    alo = AtLeastOnce(lambda: producer, MemoryConsumer(), timeout_s=1.0)
    assert alo.settled
    alo.send("verdicts", b"k", b"v")
    assert not alo.settled
    alo.commit({TX: 1}, wait=False)  # its report not in yet: the offsets wait
    assert not alo.settled
    producer.ack()
    alo.commit({}, wait=False)
    assert alo.settled
    eos = ExactlyOnce(lambda: MemoryProducer(), MemoryConsumer(), timeout_s=1.0)
    assert eos.settled
    eos.send("verdicts", b"k", b"v")
    assert not eos.settled
    eos.commit({TX: 1})
    assert eos.settled
