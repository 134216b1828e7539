"""A lost group membership rewinds only what is uncommitted (issue 13, the soak's two rewinds
after a broker restart): a checkpoint fails in the outage, the rewind rebuilds every
partition, and the first poll after it reports the partitions lost. The state is then the
last checkpoint's already, and a second rewind only rebuilt it again.

The scorer's loop runs on stream.kafka.testing's in-memory consumer and producer: a seek, and
an assignment after a loss, start the partition where the group says (the committed offset),
as a real consumer does."""

from __future__ import annotations

import orjson
from loop_support import LABELS, TX, Clients, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import AtLeastOnce, ExactlyOnce
from stream.kafka.records import BEGINNING, Polled, Record, Source
from stream.kafka.testing import MemoryConsumer, MemoryProducer
from stream.observability.metrics import Metrics
from stream.serving.loop import RunResult, ScorerLoop


class RejoiningConsumer(MemoryConsumer):
    """One transactions partition (and an empty labels one), in polls from a position a seek
    moves; at poll `lose_at` the group reports both partitions lost and, rejoined, assigns
    them again from their committed offsets."""

    def __init__(self, records: list[Record], producer: TransactionalLog, lose_at: int) -> None:
        super().__init__()
        self.log = records
        self.producer = producer
        self.lose_at = lose_at
        self.position = 0
        self.polls_made = 0

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        self.polls_made += 1
        listener = self.listener
        assert listener is not None
        if not self.assigned:
            self.assigned = [TX, LABELS]
            listener.on_assigned(list(self.assigned))
        elif self.polls_made == self.lose_at:
            sources, self.assigned = list(self.assigned), []
            listener.on_lost(sources)
            self.assigned = sources
            self.position = self.producer.offsets.get(TX, 0)
            listener.on_assigned(list(sources))
        batch = self.log[self.position:self.position + max_records]
        self.position += len(batch)
        at_end = [LABELS] + ([TX] if self.position >= len(self.log) else [])
        return Polled(batch, at_end)

    def seek(self, source: Source, offset: int) -> None:
        super().seek(source, offset)
        if source == TX:
            self.position = 0 if offset == BEGINNING else offset


def _run(fail_commits: set[int], lose_at: int,
         checkpoint_interval_ms: float) -> tuple[RunResult, TransactionalLog, list[Record]]:
    """Six transactions in polls of three under exactly-once, a budget of six."""
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                             output_topic="verdicts", max_events=6, changelog=False,
                             checkpoint_interval_ms=checkpoint_interval_ms, max_poll_records=3,
                             **PER_PARTITION)
    records = tx_records(6)
    producer = TransactionalLog(fail_commits)
    consumer = RejoiningConsumer(records, producer, lose_at)
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
