"""What the scorer does when the consumer group moves partitions (callbacks run inside the
consumer's poll, on the loop's thread).

State follows its partition: an arriving partition is restored from its changelog before it is
processed (`/readyz` says so meanwhile); a departing one is checkpointed first and forgotten
only once the new assignment shows it went to someone else. With eager rebalancing every
partition is revoked and most come straight back: dropping their state at revocation would
throw away what was learned.
"""

from __future__ import annotations

import logging

from stream.config import Settings
from stream.core.pipeline import Pipeline
from stream.errors import FencedError, GroupMovedError, InfrastructureError
from stream.kafka.records import Source
from stream.observability.health import Health
from stream.observability.lag import forget_partition
from stream.observability.metrics import Metrics
from stream.observability.quality import QualityGauges
from stream.serving.checkpoint import Checkpointer
from stream.serving.gc_policy import return_freed_memory
from stream.serving.intake import Intake
from stream.serving.recovery import RecoverableError, Recovery

log = logging.getLogger("stream.serving")


def _fmt(sources: list[Source]) -> str:
    return ", ".join(f"{topic}[{partition}]" for topic, partition in sorted(sources)) or "none"


class Rebalance:
    """The loop's rebalance listener (stream.kafka.clients.RebalanceListener)."""

    def __init__(self, settings: Settings, pipeline: Pipeline, intake: Intake,
                 checkpoints: Checkpointer, recovery: Recovery, health: Health,
                 metrics: Metrics, quality: QualityGauges) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.intake = intake
        self.checkpoints = checkpoints
        self.recovery = recovery
        self.health = health
        self.metrics = metrics
        self.quality = quality
        self.fenced: FencedError | None = None
        # Assignments so far: the loop restarts its idle clock on each (a restore can take
        # longer than --idle-exit, and is not a time without input).
        self.assignments = 0

    def on_revoked(self, sources: list[Source]) -> None:
        """Checkpoint finished work; what the intake held for them is fetched again later."""
        self.intake.revoke(sources)
        if not self.recovery.broken:
            try:
                self.checkpoints.commit()
            except FencedError as exc:
                self.fenced = exc
            except RecoverableError as exc:
                self.recovery.failed(exc)
        self.recovery.ledger.forget(sources)
        log.info("partitions revoked: %s", _fmt(sources))

    def on_lost(self, sources: list[Source]) -> None:
        """Our membership expired (a pause longer than the session timeout): the partitions
        already belong to someone else, so nothing since the last checkpoint may be committed.
        Recovery aborts it and rewinds; the group gives us partitions again on rejoin.

        With nothing uncommitted (`Recovery.settled`) there is nothing to abort, and the
        state already is the last checkpoint's: no rewind. After a broker restart longer
        than the session timeout the loss comes in the first poll after the outage: before
        any record (the soak's scorer rewound once for it, rebuilding the merchant table and
        every changelog, 17 s of feed), or right after the rewind a checkpoint failed in the
        outage started (a second rewind rebuilt it all again). The partitions that come back
        keep that state, and their positions are the committed offsets, where the group's
        new assignment starts them. An idle at-least-once scorer is settled too once its
        last checkpoint's offsets are committed, which it does while it waits for input
        (`AtLeastOnce.settle`), and the group's answer heard."""
        log.warning("partitions lost: %s", _fmt(sources))
        self.intake.revoke(sources)
        self.recovery.ledger.forget(sources)
        if self.recovery.settled():
            log.info("nothing uncommitted since the last checkpoint: the state is as committed, "
                     "no rewind")
            # The broker was away longer than the session timeout: a transactional producer
            # can hang with the coordinator it had (`ExactlyOnce.renew`).
            self.checkpoints.delivery.renew()
            return
        self.recovery.failed(GroupMovedError("partitions lost: the group moved on without us"))

    def on_assigned(self, sources: list[Source]) -> None:
        self.assignments += 1
        self.intake.track(sources)
        input_topic = self.settings.input_topic
        mine = {partition for topic, partition in sources if topic == input_topic}
        for partition in list(self.pipeline.partitions):
            if partition not in mine:
                self.pipeline.revoke(partition)
                forget_partition(self.metrics, (input_topic, partition))
                self.quality.forget_partition(partition)
        arriving = sorted(mine - set(self.pipeline.partitions))
        self.health.set_partitions(len(mine), restoring=bool(arriving))
        try:
            feed = self.recovery.feed
            if feed is not None and arriving:
                # Every merchant event committed so far, the arriving partitions' included,
                # before they restore their place in the feed from their changelog.
                feed.rebuild()
            for partition in arriving:
                self.recovery.restore(partition)
        except InfrastructureError as exc:
            self.recovery.failed(InfrastructureError(f"restore failed: {exc}"))
        self.intake.restored()  # nothing was fetched while restoring: wait from now
        if arriving:
            return_freed_memory()  # what the restores' reads and folds freed
        self.metrics.assigned.set(len(self.pipeline.partitions))
        self.health.set_partitions(len(self.pipeline.partitions))
        log.info("partitions assigned: %s", _fmt(sources))
