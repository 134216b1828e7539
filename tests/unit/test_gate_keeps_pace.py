"""Two instances catching up on a backlog move in step: each may run only `merchant_delta_s`
of event time past the merchant frontier the other has published. While the other's
frontier keeps moving, the wait for it must not run out: `merchant_max_wait_ms` bounds the
time an instance can do nothing at all (the other is dead or stalled), not how long some of
its input has been held back (serving/loop.py `_merchant_gate`).

It was the second before: with a backlog, some partition's next record is always past the
gate, so the clock ran from the first wait on, and after 2 s every instance read merchant
state as it was. In `make bench`'s scale-out phase (two instances, 200,000 events) each gave
up three or four times and then read stale for tens of thousands of transactions (77,256 and
79,299 stale reads), so two instances no longer scored as one pipeline does.

And an instance held back waits on the merchant feed, which is what lets it go on, not on
its own input for `poll_timeout_ms`: two instances took turns sleeping in that poll.

The loop runs on the in-memory clients of loop_support.py with the shared merchant table of
three input partitions: this instance owns partitions 0 and 1 (the clock ran on while one of
them had a record past the gate), and partition 2's owner (another instance) publishes a
frontier that moves a little at every poll of the feed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keys_support import KEY
from loop_support import Clients, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry

from stream.assembly import model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_transaction
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Record
from stream.kafka.testing import MemoryConsumer
from stream.observability.metrics import Metrics
from stream.serving.loop import RunResult, ScorerLoop

COUNT = 40
OWNED = [("tx", 0), ("tx", 1), ("labels", 0), ("labels", 1)]
REMOTE = 2


class Backlog(MemoryConsumer):
    """The whole backlog in the first poll; then nothing, each empty poll noted with its
    timeout (the loop would sleep that long on a real client)."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__()
        # Alternately on the two owned partitions, offsets from 0 on each.
        self.records = [Record("tx", i % 2, i // 2, r.key, r.value, r.timestamp_ms)
                        for i, r in enumerate(records)]
        self.empty_waits: list[float] = []

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        if not self.assigned:
            self.assigned = list(OWNED)
            assert self.listener is not None
            self.listener.on_assigned(list(self.assigned))
        batch, self.records = self.records, []
        if not batch:
            self.empty_waits.append(timeout_s)
        return Polled(batch, list(OWNED))


def _loop(max_wait_ms: float) -> tuple[ScorerLoop, Pipeline, Backlog, list[float]]:
    settings = load_settings(
        environ={}, group_id="g", input_topic="tx", labels_topic="labels",
        output_topic="verdicts", changelog=False, merchant_state="shared",
        merchant_max_wait_ms=max_wait_ms, max_task_idle_ms=3_600_000.0,
        poll_timeout_ms=100, idle_exit_s=None)
    records = tx_records(COUNT)
    times = [decode_transaction(r.value or b"").timestamp for r in records]
    pipeline = Pipeline(pipeline_config(settings, KEY), model_version(settings),
                        merchant_partitions=3, merchant_feed=True)
    consumer = Backlog(records)
    producer = TransactionalLog(fail_commits=set())
    loop = ScorerLoop(settings, pipeline, Metrics(CollectorRegistry()),
                      Clients(producer), consumer,  # type: ignore[arg-type]
                      ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    return loop, pipeline, consumer, times


def _run(loop: ScorerLoop, feed_poll: Callable[[float], int]) -> RunResult:
    """Run the loop with `feed_poll` standing in for the merchant feed's reads (no broker to
    rebuild the table from: the other instance's frontier is all there is)."""
    assert loop.feed is not None
    loop.feed.rebuild = lambda: 0  # type: ignore[method-assign]
    loop.feed.poll = feed_poll  # type: ignore[method-assign]
    return loop.run()


def test_a_wait_does_not_run_out_while_the_other_instance_keeps_pace() -> None:
    loop, pipeline, consumer, times = _loop(max_wait_ms=100.0)
    delta = loop.settings.merchant_delta_s
    step = [0]

    def feed_poll(timeout_s: float = 0.0) -> int:
        """The other instance publishes a frontier that lets one more record through, every
        20 ms: the backlog takes about 0.8 s, eight times the allowed wait."""
        time.sleep(0.02)
        step[0] += 1
        done = step[0] >= COUNT
        mark = times[-1] + 3600.0 if done else times[step[0] - 1] - delta + 1e-3
        pipeline.apply_feed(REMOTE, step[0], [], mark, mark)
        if done:
            loop.stop()
        return 0

    started = time.monotonic()
    result = _run(loop, feed_poll)
    assert time.monotonic() - started > 4 * loop.settings.merchant_max_wait_ms / 1000.0
    assert result.merchant_wait_timeouts == 0
    table: Any = pipeline.merchants
    assert table.stale_reads == 0
    assert result.transactions == COUNT
    # Held back, the loop waited on the feed: its own input was asked without a wait.
    assert consumer.empty_waits and max(consumer.empty_waits[:-1]) == 0.0


def test_an_instance_that_does_not_move_is_waited_for_once_then_read_as_it_is() -> None:
    loop, pipeline, _, times = _loop(max_wait_ms=100.0)
    frontier = times[9] - loop.settings.merchant_delta_s + 1e-3  # lets ten through, no more

    def feed_poll(timeout_s: float = 0.0) -> int:
        time.sleep(0.01)
        pipeline.apply_feed(REMOTE, 1, [], frontier, frontier)
        if loop.result.transactions == COUNT:
            loop.stop()
        return 0

    result = _run(loop, feed_poll)
    assert result.merchant_wait_timeouts == 1
    assert result.transactions == COUNT
    table: Any = pipeline.merchants
    assert table.stale_reads == COUNT - 10
