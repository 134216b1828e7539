"""Checkpoints: when one is due, and making one.

A checkpoint writes the changed state of every touched partition to its changelog partition,
then makes the outputs and the consumed offsets durable together through the delivery
guarantee (one transaction under exactly-once). The loop asks whether one is due and tells
this object to make it, as Quix Streams' checkpointing does; it carries no checkpoint state
itself.
"""

from __future__ import annotations

import time

from stream.config import Settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import AtLeastOnce, ExactlyOnce
from stream.observability.metrics import Metrics
from stream.serving.ledger import Ledger
from stream.serving.merchant_feed import MerchantFeed
from stream.state.changelog import encode_changes, stamp

Delivery = AtLeastOnce | ExactlyOnce


class Checkpointer:
    """Every `checkpoint_events` records or `checkpoint_interval_ms`, whichever comes first."""

    def __init__(self, settings: Settings, pipeline: Pipeline, delivery: Delivery,
                 ledger: Ledger, metrics: Metrics, feed: MerchantFeed | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.delivery = delivery
        self.ledger = ledger
        self.metrics = metrics
        self._last = time.monotonic()
        self._stamp = stamp(settings.application_id)  # on every changelog record
        self.feed = feed

    def due(self, idle: bool = False, held: bool = False) -> bool:
        """A checkpoint is due after `checkpoint_events` records or `checkpoint_interval_ms`;
        `idle` (the loop has caught up: nothing fetched waits) after only
        `Settings.idle_checkpoint_ms` (20 ms under exactly-once by default).

        Why the idle period: an exactly-once verdict is visible once its transaction commits,
        so at a light load the interval was most of its latency: at 2,000 events/s, visible
        p50 74-92 ms and p90 119-140 ms with the 100 ms interval alone, 27-32 ms and 42-50 ms
        with a 20 ms idle period (README "Benchmark"). Under load the loop never finds its
        input empty, so it keeps the interval and its batching. At-least-once keeps the
        interval by default: its verdicts are out before any checkpoint, and five times the
        checkpoints cost its scorer CPU and latency (`Settings.idle_checkpoint_ms`).

        `held` (the other instances' merchant frontier holds input back): at once, whenever
        this instance has merchant news, for the others may be held back by its frontier
        in turn. Two instances catching up on a backlog move in step, each at most
        `merchant_delta_s - merchant_lateness_s` (270 s by default) of event time past the
        other's published frontier; any period here would be added to every step.

        >>> from types import SimpleNamespace
        >>> import time
        >>> c = Checkpointer.__new__(Checkpointer)
        >>> c.settings = SimpleNamespace(checkpoint_events=10_000, checkpoint_interval_ms=100.0,
        ...                              idle_checkpoint_ms=20.0)
        >>> c.ledger = SimpleNamespace(since_checkpoint=5, isolate_until={})
        >>> c._last = time.monotonic() - 0.05  # 50 ms ago, 5 records since
        >>> c.due(), c.due(idle=True)
        (False, True)
        """
        s, since = self.settings, self.ledger.since_checkpoint
        if since >= s.checkpoint_events:
            return True
        if self.ledger.isolate_until:  # searching for a record whose output is too large
            return since >= 1
        if held:  # the other instances' frontier holds input back: they may wait on ours
            return self.feed is not None and self.pipeline.feed_news()
        period = s.idle_checkpoint_ms if idle else s.checkpoint_interval_ms
        elapsed_ms = (time.monotonic() - self._last) * 1000.0
        return elapsed_ms >= period and (
            since > 0 or bool(self.pipeline.dirty)
            or (self.feed is not None and self.pipeline.feed_news()))

    def settle(self) -> None:
        """While no checkpoint is due: commit what the delivery found committable since the
        last one (`AtLeastOnce.settle`)."""
        self.delivery.settle()

    def commit(self, wait: bool = True) -> None:
        """Changed state to the changelog, then outputs + offsets made durable together.

        `wait=False` (the running loop) lets at-least-once commit the offsets later, once the
        outputs are acknowledged, instead of stalling here for it; not while records are
        checkpointed one at a time (`Ledger.isolate_until`): a failure must name its record.
        """
        started = time.perf_counter()
        s, pipeline, ledger = self.settings, self.pipeline, self.ledger
        wait = wait or bool(ledger.isolate_until)
        if self.feed is not None:  # the same transaction as the changelog's `v` rows
            self.feed.publish(self.delivery.send, self._stamp)
        if s.changelog:
            written = 0
            for partition in sorted(pipeline.dirty & set(pipeline.partitions)):
                for key, value in encode_changes(pipeline.drain_changes(partition)):
                    self.delivery.send(s.changelog_topic, key, value, partition=partition,
                                       headers=self._stamp)
                    written += 1
            self.metrics.changelog_records.inc(written)
        else:  # nothing to write: changed partitions must not make every idle poll checkpoint
            pipeline.dirty.clear()
        self.delivery.commit(dict(ledger.done), wait=wait)
        acked = time.time() * 1000.0
        self.metrics.end_to_end.observe_many(
            [max(0.0, acked - ts) / 1000.0 for ts in ledger.record_ts])
        ledger.checkpointed({p: st.events for p, st in pipeline.partitions.items()})
        self._last = time.monotonic()
        self.metrics.commits.labels("ok").inc()
        self.metrics.checkpoint_failures.set(0)
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
