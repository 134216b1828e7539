"""A scorer that has caught up checkpoints after `checkpoint_idle_ms`, not after
`checkpoint_interval_ms` (serving/checkpoint.py `Checkpointer.due`): under exactly-once its
verdicts become visible at that checkpoint's commit, so at a light load the interval was most
of their latency; under load (the poll always finds records fetched) it keeps the interval.

The loop runs on the in-memory consumer and the transactional producer of loop_support.py,
with a consumer whose records arrive either only while the loop waits in a blocking poll (a
light load) or all at once, fetched before the loop asks (a backlog)."""

from __future__ import annotations

from loop_support import LABELS, TX, Checkpoints, Clients, assign_once, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Record
from stream.kafka.testing import MemoryConsumer
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop


class Arrivals(MemoryConsumer):
    """Batches of three records. `backlog`: every batch is already fetched, so a poll that
    does not wait returns one; otherwise a batch arrives only during a poll that waits."""

    def __init__(self, records: list[Record], backlog: bool) -> None:
        super().__init__()
        self.batches = [records[i:i + 3] for i in range(0, len(records), 3)]
        self.backlog = backlog

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        assign_once(self, [TX, LABELS])
        waits = timeout_s > 0
        batch = self.batches.pop(0) if self.batches and (self.backlog or waits) else []
        return Polled(batch, [LABELS] + ([] if self.batches else [TX]))


def _committed(backlog: bool, idle_ms: float) -> list[int]:
    """Six transactions, a budget of six, a checkpoint interval of an hour: the verdicts of
    each committed transaction."""
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic="labels",
                             output_topic="verdicts", max_events=6, changelog=False,
                             checkpoint_interval_ms=3_600_000.0, checkpoint_idle_ms=idle_ms,
                             max_poll_records=3, **PER_PARTITION)
    consumer = Arrivals(tx_records(6), backlog)
    producer = Checkpoints()
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()), Clients(producer),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    result = loop.run()
    assert result.transactions == 6 and producer.offsets == {TX: 6}
    return [size for size in producer.sizes if size]


def test_a_scorer_that_caught_up_commits_before_it_waits_for_more() -> None:
    assert _committed(backlog=False, idle_ms=0.0) == [3, 3]


def test_under_load_the_interval_still_batches_the_checkpoints() -> None:
    assert _committed(backlog=True, idle_ms=0.0) == [6]


def test_an_idle_period_as_long_as_the_interval_changes_nothing() -> None:
    assert _committed(backlog=False, idle_ms=3_600_000.0) == [6]


def test_at_least_once_keeps_the_interval_when_caught_up_unless_told_otherwise() -> None:
    # Its verdicts are out before any checkpoint: checkpoints every 20 ms only cost CPU.
    import time
    from types import SimpleNamespace

    from stream.serving.checkpoint import Checkpointer

    def due_when_caught_up(**overrides: object) -> bool:
        checkpointer = Checkpointer.__new__(Checkpointer)
        checkpointer.settings = load_settings(environ={}, checkpoint_interval_ms=100.0,
                                              **overrides)
        checkpointer.ledger = SimpleNamespace(since_checkpoint=5, isolate_until={})
        checkpointer._last = time.monotonic() - 0.05  # 50 ms ago, 5 records since
        return checkpointer.due(idle=True)

    assert due_when_caught_up()  # exactly-once: 20 ms
    assert not due_when_caught_up(guarantee="at-least-once")  # the 100 ms interval
    assert due_when_caught_up(guarantee="at-least-once", checkpoint_idle_ms=20.0)
    assert not due_when_caught_up(checkpoint_idle_ms=80.0)
