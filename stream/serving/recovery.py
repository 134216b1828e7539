"""Recovery: after a failed checkpoint, back off, start a new producer, and rewind every owned
partition to its last committed checkpoint (state from the changelog, position from the
committed offset); and restoring a partition's state on assignment, once the changelog shows
that state is this application's (stream/state/changelog.py: `check_ownership`).

Infrastructure errors (broker gone, a failed commit) do not crash the scorer: they are noted
here, and the loop asks this object to recover before it polls again. Only failures lasting
longer than `max_outage_s` end the process, with one clear line, for its orchestrator to act
on. They are timed from the first failed checkpoint to the next successful one: a rewind that
works but meets the same failure again has not recovered, so a failure that repeats on the
same records can never loop for ever.

An output refused for its size (`OutputTooLargeError`) is the fault of the input record that
made it, not of Kafka. When that record is known (`PoisonRecord`: its verdict), it is marked,
and the rewind meets it again and dead-letters it (`output_too_large`) before it is scored.
When it is not (a changelog row, a delivery report), every record processed so far is done
again with a checkpoint after each one (`Ledger.isolate_until`): the checkpoint that fails
then names its only record, which is marked in turn. A marked record that fails again ends
the run: a dead letter is bounded and always fits, so that is not a data problem.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from stream.config import Settings
from stream.core.pipeline import Pipeline
from stream.errors import GroupMovedError, InfrastructureError, OutputTooLargeError
from stream.kafka.clients import Clients, GroupConsumer
from stream.kafka.records import BEGINNING, Source
from stream.kafka.restore import read_partition
from stream.observability.metrics import Metrics
from stream.serving.checkpoint import Delivery
from stream.serving.gc_policy import return_freed_memory
from stream.serving.handlers import PoisonRecord
from stream.serving.intake import Intake
from stream.serving.ledger import Ledger
from stream.serving.merchant_feed import MerchantFeed
from stream.state.changelog import (
    OWNER_KEY,
    Ownership,
    Quarantined,
    check_ownership,
    owner_record,
    stamp,
    summarize,
)

log = logging.getLogger("stream.serving")
QUARANTINE_LINES = 5
"""Quarantined rows logged one by one per restored partition; the rest in one line."""


class Recovery:
    """Failure bookkeeping, rewind and restore."""

    def __init__(self, settings: Settings, pipeline: Pipeline, clients: Clients,
                 consumer: GroupConsumer, delivery: Delivery, ledger: Ledger, intake: Intake,
                 metrics: Metrics, stop: threading.Event,
                 feed: MerchantFeed | None = None,
                 poisoned: dict[tuple[Source, int], tuple[str, str]] | None = None) -> None:
        self.settings = settings
        # Records that make an output too large (shared with the RecordHandler).
        self.poisoned = poisoned if poisoned is not None else {}
        self.pipeline = pipeline
        self.clients = clients
        self.consumer = consumer
        self.delivery = delivery
        self.ledger = ledger
        self.intake = intake
        self.metrics = metrics
        self._stop = stop
        self.feed = feed
        self.broken_since: float | None = None
        # How long the broker has been unreachable (the loop's probe, when it has one).
        self.broker_down_for: Callable[[], float] = lambda: 0.0
        self._data_fault = False  # the last failure was an output too large, not Kafka
        self._legacy_noted = False

    @property
    def broken(self) -> bool:
        return self.broken_since is not None

    def failed(self, exc: Exception) -> None:
        """Note a failure; the loop then backs off and rewinds to the last checkpoint."""
        now = time.monotonic()
        if self.broken_since is None:
            self.broken_since = now
        ledger = self.ledger
        if ledger.failing_since is None:
            ledger.failing_since = now
        ledger.failures += 1
        self.metrics.commits.labels("failed").inc()
        self.metrics.checkpoint_failures.set(ledger.failures)
        self._data_fault = isinstance(exc, OutputTooLargeError)
        if isinstance(exc, OutputTooLargeError):
            reason = "output_too_large"
            self._too_large(exc)
        else:
            reason = "group_moved" if isinstance(exc, GroupMovedError) else "infrastructure"
            self.metrics.broker_up.set(0)
        self.metrics.recoveries.labels(reason).inc()
        log.warning("checkpoint failed (%s, %d in a row): %s; rewinding to the last checkpoint",
                    reason, ledger.failures, exc)
        if now - ledger.failing_since > self.settings.max_outage_s:
            raise InfrastructureError(self._giving_up(ledger.failures, exc)) from exc

    def settled(self) -> bool:
        """True when the scorer holds nothing uncommitted: no recovery pending, no record
        processed since the last checkpoint or rewind, and nothing in flight in the delivery.
        Its state is then the last committed checkpoint's, so losing the group's membership
        strands nothing and needs no rewind (`Rebalance.on_lost`)."""
        return (self.broken_since is None and self.ledger.since_checkpoint == 0
                and self.delivery.settled)

    def _giving_up(self, failures: int, exc: Exception) -> str:
        """The one line the run ends with: the broker's absence first when the probe saw
        it, since that is what an operator acts on (the client's own error can be as
        indirect as kafka-python's "Unable to bootstrap")."""
        outage = self.settings.max_outage_s
        line = (f"no checkpoint succeeded for more than {outage:.0f}s ({failures} failed in a "
                f"row; max_outage_s): {exc}")
        down_s = self.broker_down_for()
        if down_s > 0:
            line = (f"Kafka unreachable for {down_s:.0f}s ({self.settings.bootstrap_servers}); "
                    f"{line}; the next start resumes from the last checkpoint")
        return line

    def _too_large(self, exc: OutputTooLargeError) -> None:
        """Find the record that made an output too large (module docstring)."""
        ledger = self.ledger
        if isinstance(exc, PoisonRecord):
            self._mark(exc.source, exc.offset, exc.reason, exc.detail)
        elif ledger.isolate_until and ledger.since_checkpoint == 1 and len(ledger.done) == 1:
            (source, next_offset), = ledger.done.items()
            self._mark(source, next_offset - 1, "output_too_large",
                       f"an output it made was refused: {exc}")
        elif ledger.high:
            ledger.isolate_until = dict(ledger.high)
            log.warning("an output was refused for its size; redoing the records since the "
                        "last checkpoint one checkpoint each, to find the one that made it")

    def _mark(self, source: Source, offset: int, reason: str, detail: str) -> None:
        where = f"{source[0]}[{source[1]}] {offset}"
        if (source, offset) in self.poisoned:
            raise InfrastructureError(
                f"{where}: its dead letter was refused too ({detail}); check that the topics' "
                "max.message.bytes is at least max_message_bytes")
        self.poisoned[(source, offset)] = (reason, detail)
        log.warning("%s makes an output too large (%s): dead-lettering it", where, detail)

    def recover(self) -> bool:
        """New producer, state and positions back to the last committed checkpoint; False
        (and the failure noted) when that failed too."""
        assert self.broken_since is not None
        # A record's too-large output is no broker trouble: redo it at once.
        waited = time.monotonic() - self.broken_since
        self._stop.wait(0.0 if self._data_fault else min(5.0, 0.2 + waited / 4))
        try:
            self.delivery.reset(replace=self._data_fault)
            self.rewind()
        except (InfrastructureError, GroupMovedError) as exc:
            self.failed(exc)
            return False
        log.info("rewound to the last checkpoint after %.1fs", time.monotonic() - self.broken_since)
        self.broken_since = None
        if not self.ledger.redo_until:
            # Nothing to do again (an outage while idle): the broker answered the rewind, and
            # no checkpoint may come for a while to say so. Records to do again keep the
            # failures counting until a checkpoint of them succeeds.
            self.ledger.failures, self.ledger.failing_since = 0, None
            self.metrics.checkpoint_failures.set(0)
        self.ledger.result.recoveries += 1
        self.metrics.broker_up.set(1)
        return True

    def rewind(self) -> None:
        """Forget uncommitted work: reload owned partitions and seek to committed offsets.

        The group is asked for the committed offsets first: after a broker restart its
        coordinator can still be loading when fetches already work, and a rewind that
        rebuilt the merchant table and every partition before asking failed there, to
        rebuild all of it again at the next try."""
        assigned = self.consumer.assignment()
        # A fresh client reads the committed offsets: after a broker restart the loop's own
        # consumer can keep timing out on a coordinator it cached before the outage.
        committed = (self.clients.committed(assigned, self.settings.request_timeout_ms / 1000.0)
                     if assigned else {})
        self.ledger.rewound()
        self.intake.clear()
        if self.feed is not None:  # the table holds uncommitted events of our partitions
            self.feed.rebuild()
        # The assigned input partitions too: a restore that failed on assignment left them
        # out of the pipeline, and scoring would otherwise start them afresh.
        owned = set(self.pipeline.partitions) | {
            p for topic, p in assigned if topic == self.settings.input_topic}
        for partition in sorted(owned):
            self.restore(partition)
        self.intake.restored()  # nothing was fetched while restoring: wait from now
        return_freed_memory()  # what the restores' reads and folds freed
        for pending in (self.ledger.isolate_until, self.ledger.redo_until):
            for source in [s for s in pending if s not in assigned]:
                del pending[source]  # another instance does these records now
        redo = self.ledger.redo_until
        for source in assigned:
            # No committed offset yet: start over, as auto.offset.reset=earliest does.
            offset = committed.get(source)
            self.consumer.seek(source, BEGINNING if offset is None else offset)
            if offset is not None:
                self.ledger.committed[source] = offset
            if offset is not None and offset >= redo.get(source, 0):
                redo.pop(source, None)  # committed after all: nothing to do again

    def restore(self, partition: int) -> None:
        """Rebuild one partition's state from its changelog partition (or start it afresh),
        its clock no later than the wall clock plus `max_timestamp_ahead_s`; state written by
        another application is refused (ForeignStateError) unless `adopt_state_from` takes
        it over."""
        self._restore(partition)
        latest = time.time() + self.settings.max_timestamp_ahead_s
        clock = self.pipeline.partitions[partition].clock
        if self.pipeline.limit_clock(partition, latest):
            log.warning("partition %d: restored event-time clock %s is beyond the wall clock "
                        "plus max_timestamp_ahead_s; moved back to %s", partition,
                        _iso(clock), _iso(latest))

    def _restore(self, partition: int) -> None:
        s = self.settings
        if not s.changelog:
            self.pipeline.revoke(partition)
            self.pipeline.assign(partition)
            return
        started = time.perf_counter()
        # The partition's state goes before its changelog is read, not after (as
        # `restore_from_changelog` would): what the read and the fold allocate then reuses
        # the memory the old state held, instead of adding to it (a broker restart rewinds
        # every partition; the soak's RSS stepped up at each rewind). A failed read leaves the
        # partition without state, which the next rewind restores.
        self.pipeline.revoke(partition)

        def progress(done: int, total: int) -> None:
            self.metrics.restore_records.labels(str(partition)).set(done)
            if total > 10_000:
                log.info("restoring %s[%d]: %d/%d records", s.changelog_topic, partition,
                         done, total)

        reader = self.clients.reader(bulk=True)
        try:
            # The broker aborts a crashed instance's transaction within its timeout plus
            # its 10-second check (stream/kafka/restore.py).
            restored = read_partition(reader, s.changelog_topic, partition, progress,
                                      settle_s=s.transaction_timeout_ms / 1000.0 + 15.0)
        finally:
            reader.close()
        where = f"changelog {s.changelog_topic}[{partition}]"
        ownership = check_ownership(restored, s.application_id, s.adopt_state_from, where)
        skipped = self.pipeline.restore_from_changelog(partition, restored, where)
        lost = [*restored.quarantined, *skipped]
        self._quarantine(where, lost)
        # Deleted at the next checkpoint, so the next restore does not meet them again (the
        # owner row is cumulative and the model's is refused, never quarantined).
        self.pipeline.forget_rows(partition, [q.key for q in lost if q.key != OWNER_KEY])
        self._note(partition, ownership)
        self.ledger.durable_events[partition] = self.pipeline.partitions[partition].events
        elapsed = time.perf_counter() - started
        self.metrics.restore_seconds.observe(elapsed)
        log.info("restored %s[%d] in %.2fs: %s", s.changelog_topic, partition, elapsed,
                 dict(summarize(restored)))

    def _quarantine(self, where: str, rows: list[Quarantined]) -> None:
        """Count every skipped row; log the first few by key, then how many more."""
        for row in rows:
            self.metrics.quarantined.labels(row.store, row.reason).inc()
        for row in rows[:QUARANTINE_LINES]:
            log.warning("%s: quarantined %s row %s (%s: %s); skipped, the key starts afresh",
                        where, row.store, show_key(row.key), row.reason, row.detail)
        if len(rows) > QUARANTINE_LINES:
            log.warning("%s: %d more rows quarantined, not logged one by one (counted in "
                        "fraudstream_state_rows_quarantined_total)", where,
                        len(rows) - QUARANTINE_LINES)

    def _note(self, partition: int, ownership: Ownership) -> None:
        """Log rows from before the stamp (once), and record a takeover in the partition,
        committed by the next checkpoint, so that later restores accept the adopted rows
        without being told again."""
        s = self.settings
        if ownership.legacy and not self._legacy_noted:
            self._legacy_noted = True
            log.info("%s[%d] holds %d records without an application stamp (written before "
                     "application ids): legacy state, accepted as application %r's own "
                     "(logged once)",
                     s.changelog_topic, partition, ownership.legacy, s.application_id)
        if ownership.adopting is not None:
            key, value = owner_record(s.application_id, ownership.adopted)
            self.delivery.send(s.changelog_topic, key, value, partition=partition,
                               headers=stamp(s.application_id))
            self.pipeline.dirty.add(partition)  # a checkpoint is due: it commits the record
            log.warning("%s[%d]: application %r takes over the state of application %r "
                        "(adopt_state_from); recorded with the next checkpoint",
                        s.changelog_topic, partition, s.application_id, ownership.adopting)


def show_key(key: bytes, limit: int = 80) -> str:
    """A changelog key as a log line may hold it: bytes repr, cut to `limit` characters.

    >>> show_key(b"c:card-7")
    "b'c:card-7'"
    >>> show_key(b"n:" + b"x" * 200, 12)
    "b'n:xxxxxxxx... (202 bytes)"
    """
    text = repr(key)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(key)} bytes)"


def _iso(epoch_s: float) -> str:
    try:
        return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{epoch_s:.0f}s"


RecoverableError = (InfrastructureError, GroupMovedError)
"""What the loop recovers from by rewinding; any other deliberate error ends the run."""
