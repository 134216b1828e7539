"""Recovery: after a failed checkpoint, back off, start a new producer, and rewind every owned
partition to its last committed checkpoint (state from the changelog, position from the
committed offset); and restoring a partition's state on assignment, once the changelog shows
that state is this application's (stream/state/changelog.py: `check_ownership`).

Infrastructure errors (broker gone, a failed commit) do not crash the scorer: they are noted
here, and the loop asks this object to recover before it polls again. Only an outage longer
than `max_outage_s` ends the process, with one clear line, for its orchestrator to act on.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from stream.config import Settings
from stream.core.pipeline import Pipeline
from stream.errors import GroupMovedError, InfrastructureError
from stream.kafka.clients import Clients, GroupConsumer
from stream.kafka.records import BEGINNING
from stream.kafka.restore import read_partition
from stream.observability.metrics import Metrics
from stream.serving.checkpoint import Delivery
from stream.serving.intake import Intake
from stream.serving.ledger import Ledger
from stream.serving.merchant_feed import MerchantFeed
from stream.state.changelog import (
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
                 feed: MerchantFeed | None = None) -> None:
        self.settings = settings
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
        self._legacy_noted = False

    @property
    def broken(self) -> bool:
        return self.broken_since is not None

    def failed(self, exc: Exception) -> None:
        """Note a failure; the loop then backs off and rewinds to the last checkpoint."""
        now = time.monotonic()
        if self.broken_since is None:
            self.broken_since = now
        self.metrics.commits.labels("failed").inc()
        self.metrics.broker_up.set(0)
        reason = "group_moved" if isinstance(exc, GroupMovedError) else "infrastructure"
        self.metrics.recoveries.labels(reason).inc()
        log.warning("checkpoint failed (%s): %s; rewinding to the last checkpoint", reason, exc)
        if now - self.broken_since > self.settings.max_outage_s:
            raise InfrastructureError(
                f"Kafka unavailable for more than {self.settings.max_outage_s:.0f}s: {exc}"
            ) from exc

    def recover(self) -> bool:
        """New producer, state and positions back to the last committed checkpoint; False
        (and the failure noted) when that failed too."""
        assert self.broken_since is not None
        waited = time.monotonic() - self.broken_since
        self._stop.wait(min(5.0, 0.2 + waited / 4))
        try:
            self.delivery.reset()
            self.rewind()
        except (InfrastructureError, GroupMovedError) as exc:
            self.failed(exc)
            return False
        log.info("recovered after %.1fs", time.monotonic() - self.broken_since)
        self.broken_since = None
        self.ledger.result.recoveries += 1
        self.metrics.broker_up.set(1)
        return True

    def rewind(self) -> None:
        """Forget uncommitted work: reload owned partitions and seek to committed offsets."""
        self.ledger.rewound()
        self.intake.clear()
        before = dict(self.ledger.durable_events)
        if self.feed is not None:  # the table holds uncommitted events of our partitions
            self.feed.rebuild()
        # The assigned input partitions too: a restore that failed on assignment left them
        # out of the pipeline, and scoring would otherwise start them afresh.
        owned = set(self.pipeline.partitions) | {
            p for topic, p in self.consumer.assignment() if topic == self.settings.input_topic}
        for partition in sorted(owned):
            self.restore(partition)
        if self.delivery.transactional:  # at-least-once state may run ahead of its offsets
            extra = self.ledger.count_in_doubt(before)
            if extra:
                log.info("the last checkpoint committed after all: %d events counted", extra)
        assigned = self.consumer.assignment()
        if not assigned:
            return
        # A fresh client reads the committed offsets: after a broker restart the loop's own
        # consumer can keep timing out on a coordinator it cached before the outage.
        committed = self.clients.committed(assigned, self.settings.request_timeout_ms / 1000.0)
        for source in assigned:
            # No committed offset yet: start over, as auto.offset.reset=earliest does.
            offset = committed.get(source)
            self.consumer.seek(source, BEGINNING if offset is None else offset)

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

        def progress(done: int, total: int) -> None:
            self.metrics.restore_records.labels(str(partition)).set(done)
            if total > 10_000:
                log.info("restoring %s[%d]: %d/%d records", s.changelog_topic, partition,
                         done, total)

        reader = self.clients.reader(bulk=True)
        try:
            restored = read_partition(reader, s.changelog_topic, partition, progress)
        finally:
            reader.close()
        where = f"changelog {s.changelog_topic}[{partition}]"
        ownership = check_ownership(restored, s.application_id, s.adopt_state_from, where)
        skipped = self.pipeline.restore_from_changelog(partition, restored, where)
        self._quarantine(where, [*restored.quarantined, *skipped])
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
