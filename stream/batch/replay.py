"""Batch mode: `stream replay` re-processes a topic range or a file through the Pipeline.

Two uses: warm up a new model on recent history before it goes live (write a snapshot for
`stream run --init-from`), and back-fill verdicts for a range to another topic (after an
outage, or to see what a new model would have said). The topic range is read with a
group-less consumer (kafka_range.py), so the live consumer group is never disturbed.

By default every source partition keeps its own state, as in the live scorer, so the
back-filled verdicts are what live scoring would have produced from the same start state;
`single_model` folds all partitions into one model, which is what a warm-up snapshot wants.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from stream.assembly import merchant_partitions, time_bounds
from stream.batch.source import RunStats, Sourced, decode_as, run_items
from stream.config import Settings
from stream.contracts.codec import MAX_FIELD_LENGTH, TimeBounds
from stream.contracts.messages import Transaction
from stream.core.evaluation.prequential import Summary
from stream.core.pipeline import Pipeline, PipelineConfig, Scored
from stream.core.verdicts import verdict_bytes
from stream.devtools.progress import progress_bar
from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Producer, connect
from stream.kafka.ranges import Ranges, RangeSpec, read_aligned, resolve
from stream.state.snapshot import PartitionSnapshot


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did; `pipeline` is kept so callers can export or inspect its state."""

    stats: RunStats
    evaluation: Summary
    verdicts_sent: int
    seconds: float
    ranges: dict[str, tuple[int, int]]
    pipeline: Pipeline

    def snapshot(self, partition: int = 0) -> PartitionSnapshot:
        return self.pipeline.export_partition(partition, with_features=True)


class VerdictWriter:
    """Publishes one verdict per scored transaction, as the live loop does, to another topic.

    `latency_ms` is the time this replay took to score the event (not record-to-verdict:
    the record may be days old); `model_version` is the replaying pipeline's.
    """

    def __init__(self, producer: Producer, topic: str, pipeline: Pipeline,
                 flush_every: int = 5000) -> None:
        self.producer = producer
        self.topic = topic
        self.pipeline = pipeline
        self.flush_every = flush_every
        self.sent = 0
        self._failed: list[ClientError] = []
        self._last = time.perf_counter()

    def _delivered(self, error: ClientError | None) -> None:
        if error is not None:
            self._failed.append(error)

    def __call__(self, partition: int, tx: Transaction, scored: Scored, origin: Any) -> None:
        now = time.perf_counter()
        value = verdict_bytes(tx, scored, self.pipeline.model_version, time.time(),
                              (now - self._last) * 1000)
        self._last = now
        key = origin.key if origin is not None and origin.key is not None else \
            tx.card_id.encode()
        try:
            self.producer.send(self.topic, key, value,
                               on_delivery=self._delivered)
        except ClientError as exc:
            if exc.kind != "queue_full":
                raise InfrastructureError(f"back-filling to {self.topic} failed: {exc}") from None
            self.producer.flush(60.0)
            self.producer.send(self.topic, key, value,
                               on_delivery=self._delivered)
        self.sent += 1
        if self.sent % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        left = self.producer.flush(60.0)
        if left:
            raise InfrastructureError(f"flush of back-filled verdicts timed out with {left} "
                                      "unacknowledged")
        if self._failed:
            raise InfrastructureError(
                f"{len(self._failed)} verdict sends to {self.topic} failed: {self._failed[0]}")


def record_items(
    batches: Iterable[list[Any]], input_topic: str, single_model: bool,
    bounds: TimeBounds | None = None, max_field_length: int = MAX_FIELD_LENGTH,
) -> Iterator[Sourced]:
    """Kafka records as decoded items; labels are any record not from the input topic. With
    `bounds`, event times are checked against each record's Kafka timestamp, as live, and
    fields longer than `max_field_length` are invalid, as live."""
    for batch in batches:
        for record in batch:
            kind = "transaction" if record.topic == input_topic else "label"
            partition = 0 if single_model else record.partition
            yield partition, decode_as(kind, record.value, bounds, record.timestamp_ms,
                                       max_field_length), record


def replay_items(
    items: Iterable[Sourced], config: PipelineConfig, model_version: str | None = None,
    init_from: PartitionSnapshot | None = None, writer_factory: Callable[[Pipeline], Any]
    | None = None, total: int | None = None, progress: bool = False,
    on_scored: Callable[[int, Transaction, Scored, Any], None] | None = None,
    merchant_partitions: int | None = None,
) -> tuple[Pipeline, RunStats, int, float]:
    """Run items through a fresh Pipeline (optionally started from a snapshot).

    `merchant_partitions`: one merchant table over that many partitions, as `stream run`
    keeps it (`merchant_state = "shared"`); the items come in event-time order across the
    partitions, which is what keeps its reads exact (MerchantTable.floor)."""
    pipeline = Pipeline(config, model_version, init_from=init_from,
                        merchant_partitions=merchant_partitions)
    writer = writer_factory(pipeline) if writer_factory is not None else None

    def scored_hook(partition: int, tx: Transaction, scored: Scored, origin: Any) -> None:
        if writer is not None:
            writer(partition, tx, scored, origin)
        if on_scored is not None:
            on_scored(partition, tx, scored, origin)

    started = time.perf_counter()
    with progress_bar("replay", total, progress) as tick:
        stats = run_items(pipeline, items, on_scored=scored_hook, tick=tick)
    if writer is not None:
        writer.flush()
    sent = writer.sent if writer is not None else 0
    return pipeline, stats, sent, time.perf_counter() - started


def replay_topic(
    settings: Settings, config: PipelineConfig, spec: RangeSpec, *,
    model_version: str | None = None, init_from: PartitionSnapshot | None = None,
    with_labels: bool = True, single_model: bool = False, to_topic: str | None = None,
    progress: bool = False,
    on_scored: Callable[[int, Transaction, Scored, Any], None] | None = None,
) -> ReplayResult:
    """Replay `settings.input_topic` over `spec` (and the labels topic over the same times)."""
    clients = connect(settings)
    reader = clients.reader()
    producer: Producer | None = None
    try:
        ranges: Ranges = resolve(reader, settings.input_topic, spec)
        if with_labels:
            label_spec = RangeSpec(from_time=spec.from_time, to_time=spec.to_time)
            ranges.update(resolve(reader, settings.labels_topic, label_spec))
        total = sum(end - start for (topic, _), (start, end) in ranges.items()
                    if topic == settings.input_topic)
        if to_topic is not None:
            if not reader.partitions(to_topic):
                raise InfrastructureError(f"target topic {to_topic!r} does not exist")
            producer = clients.producer(linger_ms=20.0)
        target = producer

        def writer_factory(pipeline: Pipeline) -> VerdictWriter:
            assert target is not None and to_topic is not None
            return VerdictWriter(target, to_topic, pipeline)

        items = record_items(read_aligned(reader, ranges), settings.input_topic, single_model,
                             time_bounds(settings), settings.max_field_length)
        pipeline, stats, sent, seconds = replay_items(
            items, config, model_version, init_from,
            writer_factory if producer is not None else None, total, progress, on_scored,
            # The merchant state as the live scorer keeps it; a single model runs every
            # record as partition 0's.
            merchant_partitions=merchant_partitions(
                settings, 1 if single_model else len(reader.partitions(settings.input_topic))))
    finally:
        if producer is not None:
            producer.close(10.0)
        reader.close()
    spans = {f"{topic}[{partition}]": span for (topic, partition), span in sorted(ranges.items())}
    return ReplayResult(stats, pipeline.summary(), sent, seconds, spans, pipeline)
