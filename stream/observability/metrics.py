"""Every Prometheus metric of the scorer, defined once against an injected registry.

Tests build `Metrics(CollectorRegistry())` and read values with
`registry.get_sample_value(...)`; production uses the default registry. Labels are
low-cardinality on purpose (outcome, decision, reason, partition, model): never a card or
transaction id. Units are base units (seconds, bytes) as Prometheus recommends.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from stream.contracts.codec import REASONS
from stream.core.scoring.model import COMPILED
from stream.observability.histogram import BulkHistogram
from stream.state.changelog import QUARANTINE_KINDS

PREFIX = "fraudstream"
# Per-event work is tens of microseconds; end-to-end includes broker round trips.
PROCESSING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Labels arrive from minutes (analyst review) to months (chargebacks) after the decision.
# The (source, outcome) pairs of fraudstream_labels_total: in-event labels are counted as
# received; labels from the labels topic are learned, held, corrected (the opposite of a label
# already learned, learned again) or repeated (the same again: ignored); Pipeline.learn_label.
LABEL_OUTCOMES = (("event", "received"), ("topic", "learned"), ("topic", "held"),
                  ("topic", "corrected"), ("topic", "repeated"))
# fraudstream_events_total: "duplicate" is a repeated transaction id answered with its first
# verdict (nothing scored or learned).
EVENT_OUTCOMES = ("scored", "duplicate", "dead_lettered")
# fraudstream_alignment_doubts_total: how a doubted end of partition was settled
# (serving/intake.py): a new end, the client holding nothing more of it after settle time,
# settle time with no cut poll, or max_task_idle_ms in vain.
DOUBT_OUTCOMES = ("fresh_end", "caught_up", "quiet", "expired")
# Why the loop rewound (fraudstream_recoveries_total): Kafka failed, the group moved, or an
# input record made an output too large (it is then dead-lettered, see serving/recovery.py).
RECOVERY_REASONS = ("infrastructure", "group_moved", "output_too_large")
# The stores with a byte budget, as fraudstream_state_keys names them.
BUDGETED_STATE = ("cards", "pending_labels", "early_labels")
LABEL_DELAY_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400,
                       30 * 86400, 60 * 86400, 120 * 86400)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The metric catalogue; see README.md "Metrics" for what each one means to an operator."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.events = Counter(
            f"{PREFIX}_events", "Input records processed, by outcome.", ["outcome"], registry=r
        )
        self.verdicts = Counter(
            f"{PREFIX}_verdicts", "Verdicts published, by decision.", ["decision"], registry=r
        )
        self.warming_decisions = Counter(
            f"{PREFIX}_warming_decisions",
            "Verdicts decided by the cold-start fallback rules (model still warming), by "
            "decision; a subset of the verdicts.", ["decision"], registry=r,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters", "Records sent to the dead-letter topic.", ["reason"],
            registry=r,
        )
        # Observed per event: BulkHistogram costs a fifth of Histogram's observe.
        self.processing = BulkHistogram(
            f"{PREFIX}_processing_seconds",
            "Time to decode, featurise, score and learn one event (excludes Kafka I/O).",
            PROCESSING_BUCKETS, r,
        )
        self.end_to_end = BulkHistogram(
            f"{PREFIX}_end_to_end_latency_seconds",
            "Record timestamp to verdict acknowledged by the broker.",
            LATENCY_BUCKETS, r,
        )
        self.lag = Gauge(
            f"{PREFIX}_consumer_lag", "Records behind the end of each assigned input partition.",
            ["topic", "partition"], registry=r,
        )
        self.roc_auc = Gauge(
            f"{PREFIX}_model_roc_auc", "Rolling prequential ROC AUC (decision-time scores).",
            ["model"], registry=r,
        )
        self.log_loss = Gauge(
            f"{PREFIX}_model_log_loss", "Rolling prequential log loss.", ["model"], registry=r
        )
        self.labels = Counter(
            f"{PREFIX}_labels", "Labels received, by source and outcome.", ["source", "outcome"],
            registry=r,
        )
        self.learned = Counter(
            f"{PREFIX}_model_updates", "Learning steps taken by the champion model.", registry=r
        )
        self.commits = Counter(
            f"{PREFIX}_commits", "Offset commits, by result.", ["result"], registry=r
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_commit_seconds",
            "Flush of verdicts/dead letters plus the offset commit, per batch.",
            buckets=COMMIT_BUCKETS, registry=r,
        )
        self.changelog_records = Counter(
            f"{PREFIX}_changelog_records", "State records written to the changelog topic.",
            registry=r,
        )
        self.restore_records = Gauge(
            f"{PREFIX}_restore_records",
            "Changelog records read by the ongoing or last restore, per input partition.",
            ["partition"], registry=r,
        )
        self.restore_seconds = Histogram(
            f"{PREFIX}_restore_seconds",
            "Time to rebuild one partition's state from the changelog.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r,
        )
        self.quarantined = Counter(
            f"{PREFIX}_state_rows_quarantined",
            "Changelog rows skipped on restore because they cannot be read (not UTF-8, not "
            "JSON, wrong shape, not finite, wrong width for the feature set), by store and "
            "reason; each key starts afresh.", ["store", "reason"], registry=r,
        )
        self.recoveries = Counter(
            f"{PREFIX}_recoveries",
            "Rewinds to the last checkpoint after a failed checkpoint, by reason.", ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_records", "Records per polled batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=r,
        )
        self.buffered = Gauge(
            f"{PREFIX}_buffered_records",
            "Consumed records held for event-time alignment, not yet processed.", registry=r,
        )
        self.merchant_lag = Gauge(
            f"{PREFIX}_merchant_table_lag_seconds",
            "How far, in event time, this instance's merchant reads are ahead of what the shared "
            "merchant table can answer exactly (0 when every partition keeps pace; positive "
            "while another instance's partitions lag).", registry=r,
        )
        self.merchant_stale_reads = Counter(
            f"{PREFIX}_merchant_stale_reads",
            "Merchant reads answered past the table's frontier (a partition lagged for longer "
            "than merchant_max_wait_ms): their merchant features may miss other partitions' "
            "latest events.", registry=r,
        )
        self.merchant_waits = Counter(
            f"{PREFIX}_merchant_wait_timeouts",
            "Times the scorer stopped holding input back for the shared merchant table after "
            "merchant_max_wait_ms.", registry=r,
        )
        self.merchant_feed_rejected = Counter(
            f"{PREFIX}_merchant_feed_rejected",
            "Merchant feed records skipped as malformed (never folded).", registry=r,
        )
        self.merchant_rebuild_seconds = Histogram(
            f"{PREFIX}_merchant_rebuild_seconds",
            "Time to rebuild the shared merchant table from the merchant feed (on start, "
            "rebalance and rewind).",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r,
        )
        self.merchant_images = Counter(
            f"{PREFIX}_merchant_images",
            "Images of the shared merchant table: written (by the owner of input partition "
            "0), loaded by a rebuild, or refused by one (which then folds the whole feed).",
            ["event"], registry=r,
        )
        self.alignment_timeouts = Counter(
            f"{PREFIX}_alignment_timeouts",
            "Records released after polling max_task_idle_ms in vain for a partition that "
            "might still hold earlier records (their event-time order is not assured).",
            registry=r,
        )
        self.alignment_doubts = Counter(
            f"{PREFIX}_alignment_doubts",
            "Ends of partition doubted after a burst, by how the doubt ended: fresh_end "
            "(the partition reached a new end), quiet (settle time with no cut poll), expired "
            "(max_task_idle_ms in vain: every release waited that long).",
            ["outcome"], registry=r,
        )
        self.state_keys = Gauge(
            f"{PREFIX}_state_keys", "Keys held in memory, by kind.", ["kind"], registry=r
        )
        self.state_bytes = Gauge(
            f"{PREFIX}_state_bytes",
            "Estimated bytes held by each store with a byte budget (cards, pending_labels, "
            "early_labels): a fixed cost per entry plus its ids.", ["kind"], registry=r,
        )
        self.state_budget_drops = Counter(
            f"{PREFIX}_state_budget_drops",
            "Entries dropped (oldest first) because their store reached its byte budget.",
            ["kind"], registry=r,
        )
        self.checkpoint_failures = Gauge(
            f"{PREFIX}_checkpoint_failure_streak",
            "Checkpoints failed in a row since the last one that succeeded (0: the last one "
            "succeeded).", registry=r,
        )
        self.assigned = Gauge(
            f"{PREFIX}_assigned_partitions", "Input partitions assigned to this instance.",
            registry=r,
        )
        self.broker_up = Gauge(
            f"{PREFIX}_broker_up", "1 while the last broker round trip succeeded, else 0.",
            registry=r,
        )
        self.last_event = Gauge(
            f"{PREFIX}_last_event_timestamp_seconds",
            "Wall-clock time the last input record was processed.", registry=r,
        )
        # -- model quality, challengers, drift (issue 4; set by stream/observability/quality.py) --
        self.pr_auc = Gauge(
            f"{PREFIX}_model_pr_auc", "Rolling prequential PR AUC (average precision).",
            ["model"], registry=r,
        )
        self.precision = Gauge(
            f"{PREFIX}_model_precision",
            "Rolling precision of alerting at a threshold (review, decline).",
            ["model", "threshold"], registry=r,
        )
        self.recall = Gauge(
            f"{PREFIX}_model_recall", "Rolling recall of alerting at a threshold.",
            ["model", "threshold"], registry=r,
        )
        self.f1 = Gauge(
            f"{PREFIX}_model_f1", "Rolling F1 of alerting at a threshold.",
            ["model", "threshold"], registry=r,
        )
        self.alert_rate = Gauge(
            f"{PREFIX}_alert_rate",
            "Share of recent decisions at or above the review threshold.", ["model"], registry=r,
        )
        self.label_rate = Gauge(
            f"{PREFIX}_label_rate", "Share of decisions that have received a label.", registry=r
        )
        # One observation per label, made in bulk at the once-a-second refresh: Histogram's
        # observe held the scorer's thread ~2 ms a second at 2,000 labels/s.
        self.label_delay = BulkHistogram(
            f"{PREFIX}_label_delay_seconds",
            "Event time from decision to label (chargebacks take days).",
            LABEL_DELAY_BUCKETS, r,
        )
        self.assumed_legit = Counter(
            f"{PREFIX}_labels_assumed_legit",
            "Unlabelled transactions learned as legitimate after unlabelled_as_legit_days.",
            registry=r,
        )
        self.challenger_agreement = Gauge(
            f"{PREFIX}_challenger_agreement",
            "Share of recent decisions where the challenger agreed with the champion.",
            ["challenger"], registry=r,
        )
        self.challenger_score_diff = Gauge(
            f"{PREFIX}_challenger_score_diff",
            "Mean absolute score difference, challenger vs champion, recent decisions.",
            ["challenger"], registry=r,
        )
        self.challenger_delta = Gauge(
            f"{PREFIX}_challenger_metric_delta",
            "Challenger minus champion on the same labels (roc_auc, pr_auc, log_loss).",
            ["challenger", "metric"], registry=r,
        )
        self.drift_detected = Counter(
            f"{PREFIX}_drift_detected", "Drifts detected, by kind (loss, psi) and direction.",
            ["kind", "direction"], registry=r,
        )
        self.score_psi = Gauge(
            f"{PREFIX}_score_psi",
            "Population stability index of recent champion scores vs a reference window.",
            ["partition"], registry=r,
        )
        self.promotions = Counter(
            f"{PREFIX}_promotions", "Challengers promoted to champion.", registry=r
        )
        # Registered only once its labels are set: a scrape in between (the health server
        # starts before the scorer connects) would read a build_info without them.
        self.build = Info(f"{PREFIX}_build", "Versions of the scorer and its key libraries.",
                          registry=None)
        self.build.info({
            "version": _version("fraud-stream"),
            "river": _version("river"),
            "kafka_python": _version("kafka-python"),
            "confluent_kafka": _version("confluent-kafka"),
            "librdkafka": _librdkafka_version(),
            # "python": the install found no C compiler; same scores, more CPU per event.
            "model_loops": "compiled" if COMPILED else "python",
        })
        r.register(self.build)
        # Every label value a dashboard or an alert queries exists at zero from the start:
        # `increase(x[5m]) > 0` misses a first increment whose series did not exist before it.
        for reason in REASONS:
            self.dead_letters.labels(reason)
        for source, outcome in LABEL_OUTCOMES:
            self.labels.labels(source, outcome)
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)
        for outcome in DOUBT_OUTCOMES:
            self.alignment_doubts.labels(outcome)
        for decision in ("approve", "review", "decline"):
            self.verdicts.labels(decision)
            self.warming_decisions.labels(decision)
        for result in ("ok", "failed"):
            self.commits.labels(result)
        for reason in RECOVERY_REASONS:
            self.recoveries.labels(reason)
        for store, reason in QUARANTINE_KINDS:
            self.quarantined.labels(store, reason)
        for kind in BUDGETED_STATE:
            self.state_bytes.labels(kind)
            self.state_budget_drops.labels(kind)
        for kind in ("loss", "psi"):
            for direction in ("up", "down"):
                self.drift_detected.labels(kind, direction)


def _librdkafka_version() -> str:
    """The C library the serving path's clients run on (bundled in confluent-kafka's wheel)."""
    try:
        import confluent_kafka
    except ImportError:
        return "unknown"
    return str(confluent_kafka.libversion()[0])
