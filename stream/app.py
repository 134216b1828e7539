"""The app loop: Kafka in, pipeline, Kafka out, offsets committed only for finished work.

At-least-once: a batch's verdicts and dead letters are flushed and acknowledged by the
broker before the batch's offsets are committed, so a crash can repeat a verdict but never
lose one. Data errors become dead letters and the offset moves on; infrastructure errors
(broker gone, send failed) are raised so the process exits non-zero and its orchestrator
restarts it from the last commit (the Quix Streams / Kafka Streams split).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from stream.config import Settings
from stream.data.codec import (
    DecodeError,
    decode_label,
    decode_transaction,
    encode_dead_letter,
    encode_verdict,
    format_time,
)
from stream.data.kafka_io import InfrastructureError
from stream.data.messages import DeadLetter, SourceRef, Verdict
from stream.health import Health
from stream.metrics import Metrics
from stream.pipeline import Pipeline

log = logging.getLogger("stream.app")


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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit finished work before partitions move, then move their state."""

    def __init__(self, loop: ScorerLoop) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.loop.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.on_assigned(assigned)


class ScorerLoop:
    """Poll, decide, publish, commit; until stopped, out of budget, or idle too long."""

    def __init__(
        self, settings: Settings, pipeline: Pipeline, metrics: Metrics, consumer: Any,
        producer: Any, health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.health = health if health is not None else Health()
        self.pipeline = pipeline
        self.metrics = metrics
        self.consumer = consumer
        self.producer = producer
        self.result = RunResult()
        self._stop = threading.Event()
        self._done: dict[TopicPartition, int] = {}
        self._futures: list[Any] = []
        self._record_ts: list[int] = []
        self._next_gauges = 0.0
        self._dl_logged = 0
        self.last_progress = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and return (signal-safe)."""
        self._stop.set()

    def run(self) -> RunResult:
        s = self.settings
        self.consumer.subscribe([s.input_topic, s.labels_topic], listener=_Rebalance(self))
        budget = s.max_events
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set() and (budget is None or self.result.transactions < budget):
                self.health.beat()
                remaining = None if budget is None else budget - self.result.transactions
                processed = self._poll_once(remaining)
                self.last_progress = time.monotonic()
                if processed:
                    idle_since = self.last_progress
                elif s.idle_exit_s is not None and self.last_progress - idle_since > s.idle_exit_s:
                    log.info("no input for %.1fs, stopping", s.idle_exit_s)
                    break
            self._commit()
        finally:
            self.health.set_stopped()
            self._refresh_gauges(force=True)
        snapshot = self.pipeline.snapshot()
        self.result.labels_learned = snapshot.labels
        self.result.roc_auc = snapshot.roc_auc
        return self.result

    # -- one batch -----------------------------------------------------------------------
    def _poll_once(self, remaining: int | None) -> int:
        try:
            batch = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
            self.metrics.broker_up.set(1)
        except KafkaError as exc:
            self.metrics.broker_up.set(0)
            raise InfrastructureError(f"poll failed: {exc}") from exc
        processed = 0
        input_topic = self.settings.input_topic
        for record in _in_time_order(batch):
            if record.topic == input_topic:
                if remaining is not None and processed >= remaining:
                    break
                self._handle_transaction(record)
                processed += 1
            else:
                self._handle_label(record)
            self._done[TopicPartition(record.topic, record.partition)] = record.offset + 1
        if batch:
            self.metrics.batch_size.observe(sum(len(r) for r in batch.values()))
            self.metrics.last_event.set(time.time())
            self._commit()
        self._refresh_gauges()
        return processed

    def _handle_transaction(self, record: Any) -> None:
        started = time.perf_counter()
        self.result.transactions += 1
        try:
            tx = decode_transaction(record.value)
            scored = self.pipeline.score(tx, record.partition)
        except DecodeError as exc:
            self._dead_letter(record, exc.reason, str(exc))
            return
        except Exception as exc:  # a record that breaks the pipeline must not stop the scorer
            log.exception("%s[%d] %d: processing failed", record.topic, record.partition,
                          record.offset)
            self._dead_letter(record, "processing_error", f"{type(exc).__name__}: {exc}")
            return
        now = time.time()
        verdict = Verdict(
            transaction_id=tx.transaction_id,
            card_id=tx.card_id,
            score=scored.score,
            decision=scored.decision,
            model_version=self.pipeline.model_version,
            scored_at=format_time(now),
            latency_ms=round(max(0.0, now * 1000.0 - record.timestamp), 3),
            contributions=scored.contributions or None,
        )
        key = record.key if record.key is not None else tx.card_id.encode()
        self._send(self.settings.output_topic, key, encode_verdict(verdict), record.timestamp)
        m = self.metrics
        m.events.labels("scored").inc()
        m.verdicts.labels(scored.decision).inc()
        if tx.is_fraud is not None:
            m.labels.labels("event", "received").inc()
        if scored.learned:
            m.learned.inc(scored.learned)
        self.result.verdicts += 1
        m.processing.observe(time.perf_counter() - started)

    def _handle_label(self, record: Any) -> None:
        self.result.labels += 1
        try:
            label = decode_label(record.value)
        except DecodeError as exc:
            self._dead_letter(record, exc.reason, str(exc))
            return
        outcome = self.pipeline.learn_label(label)
        self.metrics.labels.labels("topic", outcome).inc()
        if outcome == "learned":
            self.metrics.learned.inc()

    def _dead_letter(self, record: Any, reason: str, error: str) -> None:
        letter = DeadLetter(
            reason=reason,
            error=error,
            source=SourceRef(record.topic, record.partition, record.offset),
            payload=record.value,
            key=record.key,
            headers=tuple(record.headers or ()),
        )
        self.producer_send_dead_letter(letter)
        self.metrics.events.labels("dead_lettered").inc()
        self.metrics.dead_letters.labels(reason).inc()
        self.result.dead_letters += 1
        counts = self.result.dead_letter_reasons
        counts[reason] = counts.get(reason, 0) + 1
        self._dl_logged += 1
        if self._dl_logged <= 100 or self._dl_logged % 1000 == 0:
            log.warning("%s[%d] %d: dead-lettered (%s): %s", record.topic, record.partition,
                        record.offset, reason, error)

    def producer_send_dead_letter(self, letter: DeadLetter) -> None:
        future = self.producer.send(
            self.settings.dlq_topic, key=letter.key, value=encode_dead_letter(letter),
            headers=list(letter.headers),
        )
        self._futures.append(future)

    def _send(self, topic: str, key: bytes, value: bytes, record_ts: int) -> None:
        self._futures.append(self.producer.send(topic, key=key, value=value))
        self._record_ts.append(record_ts)

    # -- commit ----------------------------------------------------------------------------
    def _commit(self) -> None:
        """Flush outputs, make sure every send succeeded, then commit the offsets."""
        if not self._done and not self._futures:
            return
        started = time.perf_counter()
        try:
            self.producer.flush(timeout=self.settings.request_timeout_ms / 1000.0)
        except KafkaError as exc:
            self.metrics.broker_up.set(0)
            raise InfrastructureError(f"flush of verdicts failed: {exc}") from exc
        failed = [f for f in self._futures if f.failed()]
        if failed:
            self.metrics.commits.labels("failed").inc()
            raise InfrastructureError(f"{len(failed)} sends failed: {failed[0].exception}")
        acked = time.time() * 1000.0
        for ts in self._record_ts:
            self.metrics.end_to_end.observe(max(0.0, acked - ts) / 1000.0)
        self._futures.clear()
        self._record_ts.clear()
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._done.items()}
        try:
            if offsets:
                self.consumer.commit(offsets)
            self.metrics.commits.labels("ok").inc()
            self._done.clear()
        except CommitFailedError as exc:
            # The group moved on; the new owner re-processes (at-least-once duplicates).
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit rejected after a rebalance: %s", exc)
            self._done.clear()
        except KafkaError as exc:
            self.metrics.commits.labels("failed").inc()
            raise InfrastructureError(f"offset commit failed: {exc}") from exc
        self.metrics.commit_seconds.observe(time.perf_counter() - started)

    # -- rebalance -------------------------------------------------------------------------
    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit finished work; keep the state until we know who gets the partitions.

        With eager rebalancing every partition is revoked and most come straight back to
        the same instance: dropping their state here would throw away what was learned.
        """
        self._commit()
        log.info("partitions revoked: %s", _fmt(revoked))

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.settings.input_topic}
        for partition in list(self.pipeline.partitions):
            if partition not in mine:
                self.pipeline.revoke(partition)
                self._remove_lag(TopicPartition(self.settings.input_topic, partition))
        for partition in mine:
            self.pipeline.assign(partition)
        self.metrics.assigned.set(len(self.pipeline.partitions))
        self.health.set_partitions(len(self.pipeline.partitions))
        log.info("partitions assigned: %s", _fmt(assigned))

    def _remove_lag(self, tp: TopicPartition) -> None:
        try:
            self.metrics.lag.remove(tp.topic, str(tp.partition))
        except KeyError:
            pass

    # -- gauges ----------------------------------------------------------------------------
    def _refresh_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_gauges:
            return
        self._next_gauges = now + 1.0
        m = self.metrics
        for tp in list(self.consumer.assignment()):
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = self._done.get(tp)
            if position is None:
                try:
                    position = self.consumer.position(tp, timeout_ms=0)
                except (KafkaError, TypeError):
                    position = None
            if position is not None:
                m.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
        snap = self.pipeline.snapshot()
        name = self.pipeline.model_version
        if snap.roc_auc == snap.roc_auc:  # not NaN
            m.roc_auc.labels(name).set(snap.roc_auc)
        if snap.log_loss == snap.log_loss:
            m.log_loss.labels(name).set(snap.log_loss)
        for kind, size in self.pipeline.state_sizes().items():
            m.state_keys.labels(kind).set(size)
        m.assigned.set(len(self.pipeline.partitions))


def _in_time_order(batch: dict[TopicPartition, list[Any]]) -> list[Any]:
    """Merge the batch's partitions by record timestamp (each is already in offset order).

    Transactions and the labels that follow them arrive on different topics; processing a
    batch partition by partition could apply a label before its transaction was scored.
    """
    if len(batch) == 1:
        return next(iter(batch.values()))
    return list(heapq.merge(*batch.values(), key=lambda record: record.timestamp))


def _fmt(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
