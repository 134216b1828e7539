"""Per-record work of the loop: a transaction becomes a verdict or a dead letter, a label is
learned. One handler for data errors (a dead letter with a reason, and the offset moves on),
as in Quix Streams; infrastructure errors from the delivery propagate to the loop, which
recovers.

A verdict larger than `max_message_bytes` (or one the client refuses for its size) raises
`PoisonRecord`: the record has already changed the partition's state, so the loop rewinds to
the last checkpoint and, meeting the record again, dead-letters it (`output_too_large`)
before it is scored. Records done again after a rewind (`Ledger.replayed`) are not counted
in the metrics a second time.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from stream.config import Settings
from stream.contracts.codec import DecodeError, dead_letter_record
from stream.contracts.messages import DeadLetter, Label, SourceRef, Transaction
from stream.core.pipeline import Pipeline
from stream.core.verdicts import verdict_bytes
from stream.errors import OutputTooLargeError
from stream.kafka.records import Headers, Record, Source
from stream.observability.metrics import Metrics
from stream.serving.intake import Arrival
from stream.serving.ledger import Ledger

log = logging.getLogger("stream.serving")


class Sender(Protocol):
    """The delivery guarantee, as the handlers use it."""

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None) -> None: ...


def same_partitions(partitions: dict[str, int], settings: Settings) -> bool:
    """True when verdicts has as many partitions as the input (`partitions`: count per
    topic), so verdict partition N can follow input partition N."""
    ins = partitions.get(settings.input_topic)
    return bool(ins) and ins == partitions.get(settings.output_topic)


# Room left in max_message_bytes for what a record adds to its key and value on the wire
# (record and batch headers): librdkafka counts them against message.max.bytes.
RECORD_OVERHEAD = 1024


class PoisonRecord(OutputTooLargeError):
    """This input record makes an output too large: dead-letter it when it comes again."""

    def __init__(self, source: Source, offset: int, reason: str, message: str) -> None:
        super().__init__(f"{source[0]}[{source[1]}] {offset}: {message}")
        self.source = source
        self.offset = offset
        self.reason = reason
        self.detail = message


class HotMetrics:
    """The per-event counts as plain numbers, added to their Prometheus counters by `flush`,
    which the loop calls after each poll's records (a scrape sees them at most one poll
    late). A counter's `inc` takes a lock, about 0.3 us; four an event were 1.2 us of a
    ~160 us loop, where a plain addition costs a twentieth of that.

    >>> from prometheus_client import CollectorRegistry
    >>> registry = CollectorRegistry()
    >>> hot = HotMetrics(Metrics(registry))
    >>> hot.verdicts["review"] += 2; hot.scored += 2; hot.flush()
    >>> registry.get_sample_value("fraudstream_verdicts_total", {"decision": "review"})
    2.0
    >>> hot.verdicts["review"], hot.scored  # flushed: counting starts again from zero
    (0, 0)
    """

    __slots__ = ("scored", "duplicates", "verdicts", "warming", "event_labels", "learned",
                 "processing", "_counters")

    def __init__(self, metrics: Metrics) -> None:
        decisions = ("approve", "review", "decline")
        self.scored = self.duplicates = self.event_labels = self.learned = 0
        self.verdicts = dict.fromkeys(decisions, 0)
        self.warming = dict.fromkeys(decisions, 0)
        self.processing = metrics.processing  # a BulkHistogram: cheap to observe as it goes
        self._counters = (
            metrics.events.labels("scored"), metrics.events.labels("duplicate"),
            metrics.labels.labels("event", "received"), metrics.learned,
            {d: metrics.verdicts.labels(d) for d in decisions},
            {d: metrics.warming_decisions.labels(d) for d in decisions})

    def flush(self) -> None:
        scored, duplicates, event_labels, learned, verdicts, warming = self._counters
        for counter, n in ((scored, self.scored), (duplicates, self.duplicates),
                           (event_labels, self.event_labels), (learned, self.learned)):
            if n:
                counter.inc(n)
        self.scored = self.duplicates = self.event_labels = self.learned = 0
        for children, counts in ((verdicts, self.verdicts), (warming, self.warming)):
            for decision, n in counts.items():
                if n:
                    children[decision].inc(n)
                    counts[decision] = 0


class RecordHandler:
    """What happens to one record."""

    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics,
                 delivery: Sender, ledger: Ledger, co_partitioned_output: bool) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.delivery = delivery
        self.ledger = ledger
        self.co_partitioned_output = co_partitioned_output
        self._hot = HotMetrics(metrics)
        self._dl_logged = 0
        self._max_output = settings.max_message_bytes - RECORD_OVERHEAD
        # Records that make an output too large, by (source, offset), with why: dead-lettered
        # when they come again (filled by serving/recovery.py).
        self.poisoned: dict[tuple[Source, int], tuple[str, str]] = {}
        self._duplicates = 0
        self._corrections = 0

    def transaction(self, arrival: Arrival) -> None:
        started = time.perf_counter()
        record, tx = arrival.record, arrival.item
        if isinstance(tx, DecodeError):
            self.dead_letter(record, tx.reason, str(tx))
            return
        assert isinstance(tx, Transaction)
        if self.poisoned and self._poisoned(record):
            return
        partition = record.partition
        try:
            scored = self.pipeline.score(tx, partition)
        except Exception as exc:  # a record that breaks the pipeline must not stop the scorer
            log.exception("%s[%d] %d: processing failed", record.topic, partition, record.offset)
            self.dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}")
            return
        now = time.time()
        record_ts = record.timestamp_ms
        value = verdict_bytes(tx, scored, self.pipeline.model_version, now,
                              max(0.0, now * 1000.0 - record_ts))
        key = record.key if record.key is not None else tx.card_id.encode()
        if len(key) + len(value) > self._max_output:
            raise PoisonRecord(record.source, record.offset, "output_too_large",
                               f"its verdict would be {len(key) + len(value)} bytes, more "
                               f"than max_message_bytes ({self.settings.max_message_bytes}) "
                               "less the record overhead")
        # Same partition count: verdict partition N follows input partition N, so a card's
        # verdicts stay together as its events do, with no per-record key hashing.
        try:
            self.delivery.send(self.settings.output_topic, key, value,
                               partition if self.co_partitioned_output else None)
        except OutputTooLargeError as exc:
            self._refused(record, exc, "its verdict was refused")
        if self.ledger.replayed(record.source, record.offset):
            return  # counted the first time
        self.ledger.result.verdicts += 1
        self.ledger.record_ts.append(record_ts)
        hot = self._hot
        hot.verdicts[scored.decision] += 1
        if scored.duplicate:
            self._duplicate(record, tx.transaction_id)
            return
        hot.scored += 1
        if scored.model_state == "warming":
            hot.warming[scored.decision] += 1
        if tx.is_fraud is not None:
            hot.event_labels += 1
        hot.learned += scored.learned
        hot.processing.observe(time.perf_counter() - started + arrival.decode_s)

    def flush_metrics(self) -> None:
        """The counts since the last flush into their Prometheus counters (`HotMetrics`)."""
        self._hot.flush()

    def _refused(self, record: Record, exc: OutputTooLargeError, what: str) -> None:
        """A send refused for its size names this record only while records are checkpointed
        one at a time: otherwise the refusal may be an earlier record's (kafka-python fails
        every send of a transaction after one of its batches was refused), and the loop
        checkpoints one record at a time to find it (serving/recovery.py)."""
        if self.ledger.isolate_until:
            raise PoisonRecord(record.source, record.offset, "output_too_large",
                               f"{what}: {exc}") from exc
        raise exc

    def _poisoned(self, record: Record) -> bool:
        """Dead-letter a record known to make an output too large, before it is scored."""
        known = self.poisoned.get((record.source, record.offset))
        if known is None:
            return False
        # A new outcome for this record, counted even on a replay. Found at once (its own
        # verdict refused), it was not counted before; found by checkpointing records one at
        # a time (an output refused later), it was counted once as scored already.
        self.dead_letter(record, *known, replayed=False)
        return True

    def label(self, arrival: Arrival) -> None:
        label, record = arrival.item, arrival.record
        if isinstance(label, DecodeError):
            self.dead_letter(record, label.reason, str(label))
            return
        assert isinstance(label, Label)
        outcome = self.pipeline.learn_label(label)
        if self.ledger.replayed(record.source, record.offset):
            return  # counted the first time
        self.metrics.labels.labels("topic", outcome).inc()
        if outcome == "learned" or outcome == "corrected":
            self.metrics.learned.inc()
        if outcome == "corrected":
            self._corrections += 1
            if _worth_a_line(self._corrections):
                record = arrival.record
                log.warning("%s[%d] %d: label correction: transaction %.64s learned again as "
                            "%s (was %s); %d corrections so far", record.topic,
                            record.partition, record.offset, label.transaction_id,
                            _label(label.is_fraud), _label(not label.is_fraud),
                            self._corrections)

    def _duplicate(self, record: Record, transaction_id: str) -> None:
        """A repeated transaction id was answered with its first verdict: counted apart."""
        self.ledger.result.duplicates += 1
        self._hot.duplicates += 1
        self._duplicates += 1
        if _worth_a_line(self._duplicates):
            log.info("%s[%d] %d: duplicate transaction %.64s: its first verdict sent again; "
                     "%d duplicates so far", record.topic, record.partition, record.offset,
                     transaction_id, self._duplicates)

    def dead_letter(self, record: Record, reason: str, error: str,
                    replayed: bool | None = None) -> None:
        """Send the record to the dead-letter topic; `replayed` (default: the ledger's) says
        whether it was counted before."""
        letter = DeadLetter(
            reason=reason,
            error=error,
            source=SourceRef(record.topic, record.partition, record.offset),
            payload=record.value,
            key=record.key,
            headers=record.headers,
        )
        # Bounded whatever the input (codec.dead_letter_record), so it always fits.
        key, value, headers = dead_letter_record(letter, self.settings.dead_letter_payload_bytes)
        try:
            self.delivery.send(self.settings.dlq_topic, key, value, headers=headers)
        except OutputTooLargeError as exc:  # the topic's limit is below max_message_bytes
            self._refused(record, exc, f"its dead letter ({reason}) was refused")
        if replayed is None:
            replayed = self.ledger.replayed(record.source, record.offset)
        if replayed:
            return  # counted (and logged) the first time
        result = self.ledger.result
        result.dead_letters += 1
        result.dead_letter_reasons[reason] = result.dead_letter_reasons.get(reason, 0) + 1
        self.metrics.events.labels("dead_lettered").inc()
        self.metrics.dead_letters.labels(reason).inc()
        self._dl_logged += 1
        if self._dl_logged <= 100 or self._dl_logged % 1000 == 0:
            log.warning("%s[%d] %d: dead-lettered (%s): %s", record.topic, record.partition,
                        record.offset, reason, error)


def _worth_a_line(n: int) -> bool:
    """The first ten of a kind, then every thousandth: one line per event, never a flood.

    >>> [n for n in range(1, 3001) if _worth_a_line(n)][-4:]
    [10, 1000, 2000, 3000]
    """
    return n <= 10 or n % 1000 == 0


def _label(is_fraud: bool) -> str:
    return "fraud" if is_fraud else "legitimate"
