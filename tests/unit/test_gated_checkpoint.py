"""An instance held back by the other instances' merchant frontier checkpoints at once
(serving/loop.py `_poll_once`), publishing its own frontier with its merchant feed: the
others may be held back by it in turn. It waited for the checkpoint interval before, or for
its input to run dry, and two instances catching up on a backlog took turns waiting: on the
bench's stream (minutes of event time per checkpoint interval, a 60 s merchant delta) two
instances answered 0.25x and 1.38x what one did in `make bench`'s scale-out phase, and 1.45x
and 1.55x with this (the scale-out phase alone, the two versions alternated on one broker).

The loop runs on the in-memory clients of loop_support.py with the shared merchant table of
two input partitions: this instance owns partition 0, and partition 1's owner (another
instance) has published a frontier a third of the way into partition 0's backlog."""

from __future__ import annotations

import math

from keys_support import KEY
from loop_support import LABELS, TX, Clients, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_transaction
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Record
from stream.kafka.testing import MemoryConsumer
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop


class Backlog(MemoryConsumer):
    """Every poll returns the next three records while any are left: input never runs dry
    before the backlog is read."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__()
        self.batches = [records[i:i + 3] for i in range(0, len(records), 3)]

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        if not self.assigned:
            self.assigned = [TX, LABELS]
            assert self.listener is not None
            self.listener.on_assigned(list(self.assigned))
        batch = self.batches.pop(0) if self.batches else []
        return Polled(batch, [LABELS] + ([] if self.batches else [TX]))


class Commits(TransactionalLog):
    """Notes how many batches were still unread at each commit that held verdicts, and stops
    the loop after the first."""

    def __init__(self, consumer: Backlog) -> None:
        super().__init__(fail_commits=set())
        self.consumer = consumer
        self.unread_at_commit: list[int] = []
        self.loop: ScorerLoop | None = None

    def commit_transaction(self, timeout_s: float) -> None:
        held = len(self.open)
        super().commit_transaction(timeout_s)
        if held:
            self.unread_at_commit.append(len(self.consumer.batches))
            assert self.loop is not None
            self.loop.stop()


def test_an_instance_held_back_by_the_others_publishes_its_frontier_at_once() -> None:
    settings = load_settings(
        environ={}, group_id="g", input_topic="tx", labels_topic="labels",
        output_topic="verdicts", changelog=False, merchant_state="shared",
        checkpoint_interval_ms=3_600_000.0, checkpoint_idle_ms=0.0,
        merchant_max_wait_ms=3_600_000.0, max_task_idle_ms=3_600_000.0, max_poll_records=3)
    records = tx_records(60)
    times = [decode_transaction(r.value or b"").timestamp for r in records]
    assert times == sorted(times)
    # The other instance's partition has reached the time that lets the first 20 through.
    remote = (times[19] + times[20]) / 2 - settings.merchant_delta_s
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings),
                        merchant_partitions=2, merchant_feed=True)
    consumer = Backlog(records)
    producer = Commits(consumer)
    loop = ScorerLoop(settings, pipeline, Metrics(CollectorRegistry()),
                      Clients(producer), consumer,  # type: ignore[arg-type]
                      ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    producer.loop = loop
    assert loop.feed is not None
    # No broker to rebuild the table from: the other instance's frontier is all there is.
    loop.feed.rebuild = lambda: pipeline.apply_feed(1, 1, [], remote, remote)  # type: ignore[method-assign]
    result = loop.run()
    assert result.transactions == 20  # held back after the 20th, for as long as it took
    # Published while the backlog was still being read (it waited for it to run dry before).
    assert producer.unread_at_commit and producer.unread_at_commit[0] > 0
    feed = [sent for sent in producer.sent if sent[0] == settings.merchant_feed_topic]
    assert feed and math.isfinite(pipeline.merchants.mark_of(0))  # type: ignore[union-attr]
