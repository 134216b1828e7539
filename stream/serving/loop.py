"""The scorer's loop: poll, release in event time, handle, checkpoint; recover when Kafka fails.

The loop only sequences. Records become verdicts in `handlers`, event-time order is the
`intake`'s, checkpoints are the `Checkpointer`'s, failures and rewinds the `Recovery`'s and
assignment changes the `Rebalance`'s; the `Ledger` holds what was done and what is durable.
Data errors become dead letters and the offset moves on; infrastructure errors make the loop
back off and rewind to the last checkpoint; only an outage longer than `max_outage_s` or
being fenced by another instance ends the run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from stream.assembly import time_bounds
from stream.config import Settings
from stream.core.pipeline import Pipeline
from stream.errors import InfrastructureError
from stream.kafka.clients import Clients, GroupConsumer
from stream.kafka.records import Source
from stream.observability import lag
from stream.observability.health import Health
from stream.observability.metrics import Metrics
from stream.observability.quality import QualityGauges
from stream.serving.checkpoint import Checkpointer, Delivery
from stream.serving.gc_policy import HeapKeeper
from stream.serving.handlers import RecordHandler, same_partitions
from stream.serving.intake import Intake
from stream.serving.ledger import Ledger, RunResult
from stream.serving.merchant_feed import MerchantFeed
from stream.serving.rebalance import Rebalance
from stream.serving.recovery import RecoverableError, Recovery

log = logging.getLogger("stream.serving")

__all__ = ["RunResult", "ScorerLoop"]


class ScorerLoop:
    """Poll, decide, publish, checkpoint; until stopped, out of budget, or idle too long."""

    def __init__(
        self, settings: Settings, pipeline: Pipeline, metrics: Metrics, clients: Clients,
        consumer: GroupConsumer, delivery: Delivery, health: Health | None = None,
        topic_partitions: dict[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.consumer = consumer
        self.delivery = delivery
        self.health = health if health is not None else Health()
        self.ledger = Ledger()
        self.quality = QualityGauges(metrics)
        self.intake = Intake(consumer, settings.input_topic, settings.labels_topic,
                             settings.max_task_idle_ms / 1000.0,
                             settings.buffered_records_per_partition,
                             bounds=time_bounds(settings),
                             max_field_length=settings.max_field_length)
        self._stop = threading.Event()
        # The shared merchant table's Kafka half, when the pipeline has one (merchant_feed.py).
        self.feed: MerchantFeed | None = None
        if pipeline.merchants is not None:
            self.feed = MerchantFeed(settings, pipeline, clients, metrics,
                                     pipeline.merchants.partitions)
        # Some owned input waits beyond the merchant gate (the feed moves it); and since when
        # none of it could be released (what `merchant_max_wait_ms` bounds).
        self._held = False
        self._gated_since: float | None = None
        # After a wait ran out: the other instances' frontier it gave up on. Input is not held
        # back again until that frontier moves (the lagging instance shows signs of life), so
        # a dead instance costs one wait, not one per poll until the group notices.
        self._gave_up_at: float | None = None
        self._idle_since: dict[int, float] = {}
        self._restores = (0, 0)  # (assignments, recoveries) when _idle_since was last valid
        self._stale_reads = 0
        self.handle = RecordHandler(settings, pipeline, metrics, delivery, self.ledger,
                                    same_partitions(topic_partitions or {}, settings))
        self.checkpoints = Checkpointer(settings, pipeline, delivery, self.ledger, metrics,
                                        self.feed)
        self.recovery = Recovery(settings, pipeline, clients, consumer, delivery, self.ledger,
                                 self.intake, metrics, self._stop, self.feed,
                                 self.handle.poisoned)
        self.rebalance = Rebalance(settings, pipeline, self.intake, self.checkpoints,
                                   self.recovery, self.health, metrics, self.quality)
        self._next_gauges = 0.0
        self._timed_out = 0
        self._doubts = dict(self.intake.doubts)
        self._budget_drops: dict[str, int] = {}
        self._stall = lag.StallWatch()
        # Set by the wiring: tells how long the broker has been unreachable. The client
        # retries inside its polls forever, so an idle loop would otherwise never notice.
        self._probe: Any = None
        # Set by `stream run` (gc_policy.py): freezes the heap's survivors between turns. Not
        # by tests and library users, whose process is not the scorer's alone.
        self.heap: HeapKeeper | None = None

    @property
    def probe(self) -> Any:
        return self._probe

    @probe.setter
    def probe(self, probe: Any) -> None:
        """The broker probe; recovery asks it too, so that giving up says why."""
        self._probe = probe
        self.recovery.broker_down_for = probe.down_for

    @property
    def result(self) -> RunResult:
        return self.ledger.result

    def stop(self) -> None:
        """Ask the loop to finish the current batch, checkpoint and return (signal-safe)."""
        self._stop.set()

    def run(self) -> RunResult:
        s = self.settings
        self.consumer.subscribe([s.input_topic, s.labels_topic], self.rebalance)
        try:
            self._turn()
            # A final checkpoint that fails rewinds: with --max-events, the records since the
            # last committed checkpoint are done again before the run ends.
            while not self._final_checkpoint():
                self._turn()
        finally:
            self.health.set_stopped()
            self._refresh_gauges(force=True)
            if self.feed is not None:
                self.feed.close()
        summary = self.pipeline.summary()
        self.result.alignment_timeouts = self.intake.timed_out
        self.result.labels_learned = summary.labels
        self.result.roc_auc = summary.roc_auc
        return self.result

    def _turn(self) -> None:
        """Poll and process until stopped, out of budget or idle too long."""
        s = self.settings
        budget = s.max_events
        idle_since = time.monotonic()
        seen_assignments = self.rebalance.assignments
        # The budget counts each input once: after a failure it is not spent until the
        # records since the last committed checkpoint are done again.
        while not self._stop.is_set() and (budget is None or self.recovery.broken
                                           or bool(self.ledger.redo_until)
                                           or self.result.transactions < budget):
            self.health.beat()
            self.health.set_checkpoint_failures(self.ledger.failures)
            if self.recovery.broken and not self.recovery.recover():
                continue
            remaining = None if budget is None else budget - self.result.transactions
            try:
                processed = self._poll_once(remaining)
                if self.checkpoints.due() and not self.recovery.broken:
                    self.checkpoints.commit(wait=False)
            except RecoverableError as exc:
                self.recovery.failed(exc)
                continue
            self._raise_if_fenced()
            self._raise_if_broker_gone()
            if self.heap is not None:
                self.heap.tick()
            now = time.monotonic()
            assignments = self.rebalance.assignments
            if processed or len(self.intake) or assignments != seen_assignments:
                idle_since = now  # input held back is input; a restore is not idleness
                seen_assignments = assignments
            elif s.idle_exit_s is not None and now - idle_since > s.idle_exit_s:
                log.info("no input for %.1fs, stopping", s.idle_exit_s)
                break

    def _poll_once(self, remaining: int | None) -> int:
        """One poll: hand its records to the intake, process what it releases."""
        s = self.settings
        polled = self.intake.poll(s.max_poll_records, 0.0)
        # Caught up (no records, none left by the last release): checkpoint now, not later.
        if not polled.records and not self.intake.backlog:
            if not self.recovery.broken:
                if self.checkpoints.due(idle=True):
                    self.checkpoints.commit(wait=False)
                else:  # at-least-once: the last checkpoint's offsets, once acknowledged
                    self.checkpoints.settle()
            if not (self._held and len(self.intake)):
                polled = self.intake.poll(s.max_poll_records, s.poll_timeout_ms / 1000.0)
            # else input waits at the merchant gate: what moves it is the feed, so the gate
            # waits on the feed instead of here on input (`poll_timeout_ms` a turn: two
            # instances catching up took turns sleeping it).
        processed = 0
        input_topic, ledger, handle = s.input_topic, self.ledger, self.handle
        until = self._merchant_gate() if self.feed is not None else math.inf
        # A turn's worth: the loop checkpoints, polls and beats between turns (Intake.release).
        arrivals = self.intake.release(until, s.max_poll_records)
        if self.feed is not None:
            self._held = self._input_held(until)
        table = self.pipeline.merchants
        if table is not None:  # the local floor holds only for records released in order
            table.ordered = self.intake.aligned
        for arrival in arrivals:
            record = arrival.record
            is_tx = record.topic == input_topic
            if is_tx:
                if remaining is not None and processed >= remaining \
                        and not ledger.replayed(record.source, record.offset):
                    break  # the rest stays uncommitted: the next run fetches it again
                handle.transaction(arrival)
            else:
                handle.label(arrival)
            if ledger.processed(record.source, record.offset + 1, is_tx) and is_tx:
                processed += 1  # the first time only: a replay spends no budget
            if ledger.isolate_until:  # finding a record whose output is too large (recovery)
                self.checkpoints.commit()
        handle.flush_metrics()
        if self._held and not self.recovery.broken and self.checkpoints.due(held=True):
            # Held back by the other instances' merchant frontier: publish this instance's
            # now, for they may be held back by it in turn.
            self.checkpoints.commit(wait=False)
        if polled.records:
            self.metrics.batch_size.observe(len(polled.records))
            self.metrics.last_event.set(time.time())
        self._refresh_gauges()
        return processed

    def _merchant_gate(self) -> float:
        """The latest event time the shared merchant table can serve exactly now: input past
        it waits for the other instances' merchant events. `merchant_max_wait_ms` bounds a
        wait in which none of the owned input can go (the others stopped); while their
        frontier moves, each record it lets through starts that clock again.

        Only the other instances' partitions can hold input back: the owned ones are
        processed in event-time order, which keeps them past the time being processed
        (MerchantTable.floor), so a single instance never waits. An owned partition with
        nothing waiting at the end of its input for `max_task_idle_ms` follows the latest
        event time known (the feed's included), so that the other instances need not wait
        for it either; waiting that long first keeps a partition that is only between two
        fetches (or just assigned) from being taken for idle, which would move its stream
        time and so its later events' effective times."""
        assert self.feed is not None
        self.feed.poll(0.05 if self._held else 0.0)  # held: wait on the feed, not in a spin
        pipeline, intake, idle = self.pipeline, self.intake, self._idle_since
        restores = (self.rebalance.assignments, self.ledger.result.recoveries)
        if restores != self._restores:  # nothing was fetched while restoring: not idleness
            self._restores = restores
            idle.clear()
        table = pipeline.merchants
        assert table is not None
        # Only another instance waits for an idle partition: alone, the floor covers it.
        others = table.remote_frontier() < math.inf
        ahead, first = -math.inf, math.inf
        now = time.monotonic()
        for partition in pipeline.partitions:
            head = intake.next_time(partition)
            if head is None and not others:
                continue
            if head is None:  # idle for max_task_idle_ms: not just between two fetches
                since = idle.setdefault(partition, now)
                if now - since >= self.settings.max_task_idle_ms / 1000.0:
                    pipeline.idle(partition)
            else:
                idle.pop(partition, None)
                pipeline.lookahead(partition, head)
                if head > ahead:
                    ahead = head
                if head < first:
                    first = head
        remote = table.remote_frontier()
        if self._gave_up_at is not None:
            if remote <= self._gave_up_at:
                return math.inf
            self._gave_up_at = None
        until = remote + table.delta_s
        if first <= until or first == math.inf:  # something can go, or nothing waits
            self._gated_since = None
            return until
        if self._gated_since is None:
            self._gated_since = now
        elif now - self._gated_since > self.settings.merchant_max_wait_ms / 1000.0:
            self._gated_since = None
            self._gave_up_at = remote
            self.metrics.merchant_waits.inc()
            self.result.merchant_wait_timeouts += 1
            behind = (f"{ahead - remote:.0f}s of event time behind" if math.isfinite(remote)
                      else "not published yet")
            log.warning("waited %.1fs for the other instances' merchant events (their "
                        "frontier is %s); reading merchant state as it is until they move",
                        self.settings.merchant_max_wait_ms / 1000.0, behind)
            return math.inf
        return until

    def _input_held(self, until: float) -> bool:
        """Whether owned input waits beyond the merchant gate at `until` (not for event-time
        alignment: a source that may still bring earlier records is waited for by polling)."""
        if until == math.inf:
            return False
        next_time = self.intake.next_time
        for partition in self.pipeline.partitions:
            head = next_time(partition)
            if head is not None and head > until:
                return True
        return False

    def _final_checkpoint(self) -> bool:
        """Commit what is done; False when a failure rewound the loop and, not stopped, it
        has records to do again first (it then checkpoints again after them)."""
        self._raise_if_fenced()
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while True:
            try:
                rewinding = self.recovery.broken
                if not rewinding or self.recovery.recover():
                    if rewinding and self.ledger.redo_until and not self._stop.is_set():
                        return False
                    self.checkpoints.commit()
                    return True
            except RecoverableError as exc:
                self.recovery.failed(exc)
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
        if self.rebalance.fenced is not None:
            raise self.rebalance.fenced

    def _report_stall(self, lags: dict[Source, int]) -> None:
        """A warning, once every `StallWatch.after_s`, while input waits and nothing is done,
        naming what could hold it: the intake's holdings and pauses, the merchant gate, a
        rewind. (An intake that forgot its pauses across a rebalance could stop a scorer for
        good, silently.) One offset a partition is not taken for waiting input: after a
        transactional producer's last record comes its commit marker, which is no record, so
        a scorer at the end of such a partition is one offset "behind" for good."""
        progress = (sum(self.ledger.positions().values()), self.rebalance.assignments,
                    self.ledger.result.recoveries)
        waiting = sum(lags.values())
        stalled = self._stall.stalled(progress, sum(max(0, n - 1) for n in lags.values()))
        if stalled is None:
            return
        if self._gated_since is not None:
            gate = f"waiting {time.monotonic() - self._gated_since:.1f}s for other instances"
        else:
            gate = "given up until the others move" if self._gave_up_at is not None else "open"
        behind = ", ".join(f"{t}[{p}] {n}" for (t, p), n in sorted(lags.items()) if n)
        log.warning("nothing done for %.0fs while %d input records wait (%s); the intake "
                    "holds %d and has paused %s; merchant gate %s; %s", stalled, waiting,
                    behind, len(self.intake), self.intake.paused or "nothing", gate,
                    "a failure is being recovered" if self.recovery.broken else "no failure")

    def _refresh_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_gauges:
            return
        self._next_gauges = now + 1.0
        self._report_stall(lag.refresh(self.metrics, self.consumer, self.pipeline,
                                       self.ledger.positions()))
        lag.refresh_budgets(self.metrics, self.pipeline, self._budget_drops)
        self.metrics.buffered.set(len(self.intake))
        timed_out = self.intake.timed_out
        if timed_out > self._timed_out:
            self.metrics.alignment_timeouts.inc(timed_out - self._timed_out)
            self._timed_out = timed_out
        for outcome, count in self.intake.doubts.items():
            if count > self._doubts[outcome]:
                self.metrics.alignment_doubts.labels(outcome).inc(count - self._doubts[outcome])
                self._doubts[outcome] = count
        self.quality.refresh(self.pipeline.oversight, self.pipeline.model_version)
        table = self.pipeline.merchants
        if table is not None:
            if table.stale_reads > self._stale_reads:
                self.metrics.merchant_stale_reads.inc(table.stale_reads - self._stale_reads)
            self._stale_reads = table.stale_reads
            self.metrics.merchant_lag.set(self.pipeline.merchant_lag())
