"""The app loop: Kafka in, pipeline, Kafka out, state checkpointed with the offsets.

Every `checkpoint_events` records or `checkpoint_interval_ms`, the loop writes the changed
state of each touched partition to the changelog and commits the consumed offsets through
the delivery guarantee (one Kafka transaction for exactly-once; flush-then-commit for
at-least-once). Data errors become dead letters and the offset moves on. Infrastructure
errors (broker gone, a failed commit) do not crash the loop: it backs off, starts a new
producer, rewinds every owned partition to its last committed checkpoint (state from the
changelog, position from the committed offset) and carries on; only an outage longer than
`max_outage_s` or being fenced by another instance ends the process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from stream.config import Settings
from stream.core.pipeline import Pipeline
from stream.errors import FencedError, GroupMovedError, InfrastructureError
from stream.kafka.delivery import AtLeastOnce, ExactlyOnce
from stream.kafka.rdkafka import next_batch
from stream.observability import lag as gauges
from stream.observability.health import Health
from stream.observability.metrics import Metrics
from stream.observability.quality import QualityGauges
from stream.serving.handlers import HotMetrics, RecordHandlers, same_partitions
from stream.serving.intake import Intake
from stream.state.changelog import encode_changes, read_partition, summarize

log = logging.getLogger("stream.serving.loop")
Delivery = AtLeastOnce | ExactlyOnce


@dataclass(slots=True)
class RunResult:
    """What a run did, for the CLI's exit line and for tests."""

    transactions: int = 0
    verdicts: int = 0
    dead_letters: int = 0
    labels: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    labels_learned: int = 0
    roc_auc: float = float("nan")
    checkpoints: int = 0
    recoveries: int = 0


class ScorerLoop(RecordHandlers):
    """Poll, decide, publish, checkpoint; until stopped, out of budget, or idle too long."""

    def __init__(
        self, settings: Settings, pipeline: Pipeline, metrics: Metrics, consumer: Any,
        delivery: Delivery, health: Health | None = None,
        restore_consumer: Callable[[], Any] | None = None,
        topic_partitions: dict[str, int] | None = None,
        offsets_reader: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.health = health if health is not None else Health()
        self.pipeline = pipeline
        self.metrics = metrics
        self.quality = QualityGauges(metrics)
        self.consumer = consumer
        self.intake = Intake(consumer, settings.input_topic, settings.labels_topic,
                             settings.max_task_idle_ms / 1000.0,
                             settings.buffered_records_per_partition)
        self.delivery = delivery
        self.result = RunResult()
        # The result as of the last checkpoint: a rewind rolls the counts back to it, so
        # --max-events counts each input record once even when work is redone.
        self._committed = RunResult()
        # Events per partition as of its last durable checkpoint (or restore): a rewind
        # compares them with what the changelog holds to count a checkpoint whose commit
        # outcome was in doubt (timed out, yet committed) exactly once.
        self._durable_events: dict[int, int] = {}
        self._restore_consumer = restore_consumer
        self._offsets_reader = offsets_reader
        self._stop = threading.Event()
        self._done: dict[tuple[str, int], int] = {}
        self._record_ts: list[int] = []
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._broken_since: float | None = None
        self._fenced: FencedError | None = None
        self._next_gauges = 0.0
        self._timed_out = 0
        self._dl_logged = 0
        self._hot = HotMetrics(metrics)
        # Set by the service: tells how long the broker has been unreachable. The client
        # retries inside consume() forever, so an idle loop would otherwise never notice.
        self.probe: Any = None
        self.co_partitioned_output = same_partitions(topic_partitions or {}, settings)

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current batch, checkpoint and return (signal-safe)."""
        self._stop.set()

    def run(self) -> RunResult:
        s = self.settings
        # The callbacks run inside consume(), on this thread, between two batches.
        self.consumer.subscribe(
            [s.input_topic, s.labels_topic],
            on_assign=lambda _c, tps: self.on_assigned(tps),
            on_revoke=lambda _c, tps: self.on_revoked(tps),
            on_lost=lambda _c, tps: self.on_lost(tps),
        )
        budget = s.max_events
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set() and (budget is None or self.result.transactions < budget):
                self.health.beat()
                if self._broken_since is not None and not self._try_recover():
                    continue
                remaining = None if budget is None else budget - self.result.transactions
                try:
                    processed = self._poll_once(remaining)
                    if self._checkpoint_due():
                        self._checkpoint(wait=False)
                except (InfrastructureError, GroupMovedError) as exc:
                    self._broken(exc)
                    continue
                self._raise_if_fenced()
                self._raise_if_broker_gone()
                now = time.monotonic()
                if processed:
                    idle_since = now
                elif s.idle_exit_s is not None and now - idle_since > s.idle_exit_s:
                    log.info("no input for %.1fs, stopping", s.idle_exit_s)
                    break
            self._final_checkpoint()
        finally:
            self.health.set_stopped()
            self._refresh_gauges(force=True)
        snapshot = self.pipeline.snapshot()
        self.result.labels_learned = snapshot.labels
        self.result.roc_auc = snapshot.roc_auc
        return self.result

    def _final_checkpoint(self) -> None:
        self._raise_if_fenced()
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while True:
            try:
                if self._broken_since is None or self._try_recover():
                    self._checkpoint()
                    return
            except (InfrastructureError, GroupMovedError) as exc:
                self._broken(exc)
            if time.monotonic() > deadline:
                raise InfrastructureError("could not checkpoint before the shutdown deadline; "
                                          "the next start resumes from the last checkpoint")
            time.sleep(0.5)

    def _raise_if_broker_gone(self) -> None:
        if self.probe is not None and self.probe.down_for() > self.settings.max_outage_s:
            raise InfrastructureError(
                f"Kafka unreachable for more than {self.settings.max_outage_s:.0f}s "
                f"({self.settings.bootstrap_servers}); the next start resumes from the last "
                "checkpoint"
            )

    def _raise_if_fenced(self) -> None:
        if self._fenced is not None:
            raise self._fenced

    # -- one batch -----------------------------------------------------------------------
    def _poll_once(self, remaining: int | None) -> int:
        s = self.settings
        try:
            batch = next_batch(self.consumer, s.max_poll_records, s.poll_timeout_ms / 1000.0)
        except KafkaException as exc:
            raise InfrastructureError(f"poll failed: {exc}") from exc
        self.intake.take(batch)
        processed = 0
        input_topic = s.input_topic
        done = self._done
        for arrival in self.intake.release():
            record = arrival.record
            topic, partition = record.topic(), record.partition()
            if topic == input_topic:
                if remaining is not None and processed >= remaining:
                    break  # the rest stays uncommitted: the next run fetches it again
                self._handle_transaction(arrival)
                processed += 1
            else:
                self._handle_label(arrival)
            done[(topic, partition)] = record.offset() + 1
            self._since_checkpoint += 1
        if batch:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.last_event.set(time.time())
        self._refresh_gauges()
        return processed

    # -- checkpoints -----------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        s = self.settings
        if self._since_checkpoint >= s.checkpoint_events:
            return True
        elapsed_ms = (time.monotonic() - self._last_checkpoint) * 1000.0
        return elapsed_ms >= s.checkpoint_interval_ms and (self._since_checkpoint > 0
                                                           or bool(self.pipeline.dirty))

    def _checkpoint(self, wait: bool = True) -> None:
        """Changed state to the changelog, then outputs + offsets made durable together.

        `wait=False` (the running loop) lets at-least-once commit the offsets later, once
        the outputs are acknowledged, instead of stalling here for it.
        """
        started = time.perf_counter()
        s = self.settings
        if s.changelog:
            written = 0
            for partition in sorted(self.pipeline.dirty & set(self.pipeline.partitions)):
                for key, value in encode_changes(self.pipeline.drain_changes(partition)):
                    self.delivery.send(s.changelog_topic, key, value, partition=partition)
                    written += 1
            self.metrics.changelog_records.inc(written)
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), offset in self._done.items()]
        self.delivery.commit(offsets, wait=wait)
        acked = time.time() * 1000.0
        for ts in self._record_ts:
            self.metrics.end_to_end.observe(max(0.0, acked - ts) / 1000.0)
        self._record_ts.clear()
        self._done.clear()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.result.checkpoints += 1
        self._durable_events = {p: st.events for p, st in self.pipeline.partitions.items()}
        self._committed = replace(self.result,
                                  dead_letter_reasons=dict(self.result.dead_letter_reasons))
        self.metrics.commits.labels("ok").inc()
        self.metrics.commit_seconds.observe(time.perf_counter() - started)

    # -- recovery --------------------------------------------------------------------------
    def _broken(self, exc: Exception) -> None:
        """Note a failure; the next iterations back off and rewind to the last checkpoint."""
        now = time.monotonic()
        if self._broken_since is None:
            self._broken_since = now
        self.metrics.commits.labels("failed").inc()
        self.metrics.broker_up.set(0)
        reason = "group_moved" if isinstance(exc, GroupMovedError) else "infrastructure"
        self.metrics.recoveries.labels(reason).inc()
        log.warning("checkpoint failed (%s): %s; rewinding to the last checkpoint", reason, exc)
        if now - self._broken_since > self.settings.max_outage_s:
            raise InfrastructureError(
                f"Kafka unavailable for more than {self.settings.max_outage_s:.0f}s: {exc}"
            ) from exc

    def _try_recover(self) -> bool:
        """New producer, state and positions back to the last committed checkpoint."""
        assert self._broken_since is not None
        waited = time.monotonic() - self._broken_since
        self._stop.wait(min(5.0, 0.2 + waited / 4))
        try:
            self.delivery.reset()
            self._rewind()
        except (InfrastructureError, KafkaException, GroupMovedError) as exc:
            self._broken(exc if isinstance(exc, InfrastructureError | GroupMovedError)
                         else InfrastructureError(str(exc)))
            return False
        log.info("recovered after %.1fs", time.monotonic() - self._broken_since)
        self._broken_since = None
        self.result.recoveries += 1
        self.metrics.broker_up.set(1)
        return True

    def _rewind(self) -> None:
        """Forget uncommitted work: reload owned partitions and seek to committed offsets."""
        recoveries, checkpoints = self.result.recoveries, self.result.checkpoints
        self.result = replace(self._committed, recoveries=recoveries, checkpoints=checkpoints,
                              dead_letter_reasons=dict(self._committed.dead_letter_reasons))
        self._done.clear()
        self._record_ts.clear()
        self._since_checkpoint = 0
        self.intake.clear()
        before = dict(self._durable_events)
        for partition in list(self.pipeline.partitions):
            self._restore(partition)
        if self.delivery.transactional:  # at-least-once state may run ahead of its offsets
            self._count_in_doubt(before)
        assigned = self.consumer.assignment()
        if not assigned:
            return
        for tp in self._committed_offsets(assigned):
            # No committed offset yet (negative): start over, as auto.offset.reset=earliest.
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _committed_offsets(self, assigned: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets, read by a fresh client: after a broker restart the
        loop's own consumer can keep timing out on a coordinator it cached before the outage
        (confluentinc/librdkafka#5511), which would stall recovery for minutes."""
        timeout = self.settings.request_timeout_ms / 1000.0
        if self._offsets_reader is None:
            return list(self.consumer.committed(assigned, timeout=timeout))
        reader = self._offsets_reader()
        try:
            return list(reader.committed(assigned, timeout=timeout))
        finally:
            reader.close()

    def _count_in_doubt(self, before: dict[int, int]) -> None:
        """A commit that timed out may still have been committed by the broker: the restored
        state then holds events the counters rolled back. Count them, so `--max-events` is
        reached, and a rewind never makes the scorer wait for records it already did."""
        extra = sum(max(0, events - before.get(p, events))
                    for p, events in self._durable_events.items())
        if extra:
            log.info("the last checkpoint committed after all: %d events counted", extra)
            self.result.transactions += extra
            self.result.verdicts += extra
            self._committed = replace(self.result, dead_letter_reasons=dict(
                self.result.dead_letter_reasons))

    def _restore(self, partition: int) -> None:
        """Rebuild one partition's state from its changelog partition."""
        s = self.settings
        if not s.changelog or self._restore_consumer is None:
            self.pipeline.revoke(partition)
            self.pipeline.assign(partition)
            return
        started = time.perf_counter()
        consumer = self._restore_consumer()
        try:
            def _progress(done: int, total: int) -> None:
                self.metrics.restore_records.labels(str(partition)).set(done)
                if total > 10_000:
                    log.info("restoring %s[%d]: %d/%d records", s.changelog_topic, partition,
                             done, total)

            restored = read_partition(consumer, s.changelog_topic, partition, _progress)
        finally:
            consumer.close()
        self.pipeline.restore_from_changelog(partition, restored)
        self._durable_events[partition] = self.pipeline.partitions[partition].events
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("restored %s[%d] in %.2fs: %s", s.changelog_topic, partition, elapsed,
                 dict(summarize(restored)))

    # -- rebalance -------------------------------------------------------------------------
    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Checkpoint finished work; keep the state until we know who gets the partitions.

        With eager rebalancing every partition is revoked and most come straight back to
        the same instance: dropping their state here would throw away what was learned.
        """
        self.intake.revoke((tp.topic, tp.partition) for tp in revoked)
        if self._broken_since is None:
            try:
                self._checkpoint()
            except FencedError as exc:
                self._fenced = exc
            except (InfrastructureError, GroupMovedError) as exc:
                self._broken(exc)
        log.info("partitions revoked: %s", _fmt(revoked))

    def on_lost(self, lost: list[TopicPartition]) -> None:
        """Our membership expired (a pause longer than the session timeout): the partitions
        already belong to someone else, so nothing since the last checkpoint may be committed.
        Recovery aborts it and rewinds; the group gives us partitions again on rejoin."""
        log.warning("partitions lost: %s", _fmt(lost))
        self.intake.revoke((tp.topic, tp.partition) for tp in lost)
        self._broken(GroupMovedError("partitions lost: the group moved on without us"))

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        self.intake.track((tp.topic, tp.partition) for tp in assigned)
        mine = {tp.partition for tp in assigned if tp.topic == self.settings.input_topic}
        for partition in list(self.pipeline.partitions):
            if partition not in mine:
                self.pipeline.revoke(partition)
                gauges.forget_partition(
                    self.metrics, TopicPartition(self.settings.input_topic, partition))
                self.quality.forget_partition(partition)
        arriving = sorted(mine - set(self.pipeline.partitions))
        self.health.set_partitions(len(mine), restoring=bool(arriving))
        try:
            for partition in arriving:
                self._restore(partition)
        except (InfrastructureError, KafkaException) as exc:
            self._broken(InfrastructureError(f"restore failed: {exc}"))
        self.metrics.assigned.set(len(self.pipeline.partitions))
        self.health.set_partitions(len(self.pipeline.partitions))
        log.info("partitions assigned: %s", _fmt(assigned))

    def _refresh_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_gauges:
            return
        self._next_gauges = now + 1.0
        gauges.refresh(self.metrics, self.consumer, self.pipeline, self._done)
        self.metrics.buffered.set(len(self.intake))
        timed_out = self.intake.timed_out
        if timed_out > self._timed_out:
            self.metrics.alignment_timeouts.inc(timed_out - self._timed_out)
            self._timed_out = timed_out
        self.quality.refresh(self.pipeline.oversight, self.pipeline.model_version)


def _fmt(tps: list[TopicPartition]) -> str:
    names = sorted((tp.topic, tp.partition) for tp in tps)
    return ", ".join(f"{topic}[{partition}]" for topic, partition in names) or "none"
