"""librdkafka consumers: the scorer's group member and the group-less reader.

Polls never wait for a full batch: `consume(n, 0)` returns what is already fetched, and only
when nothing is does the poll wait (`poll(timeout)`); `consume(500, 0.1)` alone would add
100 ms to every verdict at 2,000 events/s. End-of-partition events (`enable.partition.eof`)
become `Polled.at_end`, which is how the event-time intake knows a partition is caught up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException

from stream.config import READER_FETCH_WAIT_MS, Settings
from stream.kafka.classify import ClientError, FailureWatch
from stream.kafka.clients import RebalanceListener
from stream.kafka.commits import AsyncCommits
from stream.kafka.rdkafka import _tp, client_error, connection_config, explained
from stream.kafka.records import BEGINNING, Polled, Record, Source

log = logging.getLogger("stream.kafka")


def _commit_cb(error: KafkaError | None, partitions: list[Any]) -> None:
    """Result of an asynchronous offset commit (at-least-once checkpoints). A failure loses
    nothing: the next checkpoint commits later offsets, and a rebalance commits synchronously."""
    if error is not None:
        log.warning("offset commit failed: %s", error)


def _polled(messages: list[Any], most: int, ends: dict[Source, int] | None = None) -> Polled:
    """Client messages as Records; end-of-partition events as `at_end` (a partition that
    delivered a record after its end event is not at its end any more), and their offsets in
    `ends`; `more` when the batch was cut at `most` messages (the client's queue may hold
    more)."""
    out = Polled(more=len(messages) >= most)
    records, at_end = out.records, out.at_end
    for m in messages:
        error = m.error()
        if error is None:
            topic, partition = m.topic(), m.partition()
            records.append(Record(topic, partition, m.offset(), m.key(), m.value(),
                                  m.timestamp()[1], tuple(m.headers() or ())))
            if at_end and (topic, partition) in at_end:
                at_end.remove((topic, partition))
        elif error.code() == KafkaError._PARTITION_EOF:
            at_end.append((m.topic(), m.partition()))
            if ends is not None:
                ends[(m.topic(), m.partition())] = m.offset()
        elif error.fatal():
            raise client_error(error)
        else:  # transient (a leader moving, a topic re-created): retried by the client
            log.warning("consumer: %s", error)
    return out


def _batch(consumer: Consumer, most: int, timeout_s: float) -> list[Any]:
    """Whatever is already fetched (up to `most`), waiting up to `timeout_s` only when
    nothing is."""
    batch: list[Any] = consumer.consume(most, 0)
    if batch:
        return batch
    first = consumer.poll(timeout_s)
    if first is None:
        return batch
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


def group_config(settings: Settings, watch: FailureWatch | None = None,
                 on_commit: Callable[[KafkaError | None, list[Any]], None] = _commit_cb,
                 ) -> dict[str, Any]:
    """The scorer's group member: explicit commits only, read_committed, range assignor.

    >>> from stream.config import load_settings
    >>> config = group_config(load_settings(environ={}))
    >>> config["fetch.min.bytes"], config["fetch.wait.max.ms"], config["isolation.level"]
    (32768, 2, 'read_committed')
    """
    return {
        **connection_config(settings, watch),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        # A killed instance's partitions move after this long, not after 45 s.
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "partition.assignment.strategy": "range",
        # A fetch waits for this many bytes or this long (`Settings.group_fetch`: by default
        # 32 KiB or 2 ms, batches rather than a fetch per producer batch).
        "fetch.min.bytes": settings.group_fetch[0],
        "fetch.wait.max.ms": settings.group_fetch[1],
        # Prefetch bound: what is queued locally is re-fetched after a rewind anyway.
        "queued.max.messages.kbytes": 16 * 1024,
        "on_commit": on_commit,
    }


def _sources(tps: list[Any]) -> list[Source]:
    return [(tp.topic, tp.partition) for tp in tps]


class RdkafkaGroupConsumer:
    """The scorer's group member: explicit commits only, read_committed, range assignor."""

    def __init__(self, settings: Settings) -> None:
        self._watch = FailureWatch()
        self._subscribed = False
        self._consumer = Consumer(group_config(settings, self._watch, self._commit_heard))
        self._failed: BaseException | None = None
        self._commits = AsyncCommits()  # `commit_pending`
        # Where each partition was last found at its end (`_marks`).
        self._ends: dict[Source, int] = {}

    def _explained(self, exc: KafkaException) -> ClientError:
        """The error, explained; the error callback is heard by a poll only while nothing is
        subscribed (a poll of a member could return a record, which would be lost)."""
        serve = None if self._subscribed else (lambda: self._consumer.poll(0))
        return explained(client_error(exc), self._watch, serve)

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self._subscribed = True
        self._consumer.subscribe(
            topics,
            on_assign=lambda _c, tps: self._callback(listener.on_assigned, tps),
            on_revoke=lambda _c, tps: self._callback(listener.on_revoked, tps),
            on_lost=lambda _c, tps: self._callback(listener.on_lost, tps),
        )

    def _callback(self, call: Any, tps: list[Any]) -> None:
        """Run a listener callback; keep what it raises for `poll`, which re-raises it once
        the batch fetched around it is put back (librdkafka would otherwise drop that batch:
        confluentinc/confluent-kafka-python#260)."""
        self._ends.clear()
        try:
            call(_sources(tps))
        except BaseException as exc:  # noqa: BLE001 - re-raised by poll
            if self._failed is None:
                self._failed = exc

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        try:
            messages = _batch(self._consumer, max_records, timeout_s)
        except KafkaException as exc:
            raise client_error(exc) from None
        failed, self._failed = self._failed, None
        if failed is not None:
            self._rewind_to(messages)
            raise failed
        return _polled(messages, max_records, self._ends)

    def _rewind_to(self, messages: list[Any]) -> None:
        """Seek every partition of a batch that will not be returned back to its first
        record, so the next poll delivers it again."""
        first: dict[Source, int] = {}
        for m in messages:
            if m.error() is None:
                first.setdefault((m.topic(), m.partition()), m.offset())
        assigned = set(self.assignment())
        for source, offset in first.items():
            if source in assigned:
                self._consumer.seek(_tp(source, offset))

    def assignment(self) -> list[Source]:
        return _sources(self._consumer.assignment())

    def pause(self, sources: list[Source]) -> None:
        self._consumer.pause([_tp(s) for s in sources])

    def resume(self, sources: list[Source]) -> None:
        self._consumer.resume([_tp(s) for s in sources])

    def seek(self, source: Source, offset: int) -> None:
        self._ends.pop(source, None)
        try:
            self._consumer.seek(_tp(source, OFFSET_BEGINNING if offset == BEGINNING else offset))
        except KafkaException as exc:
            raise client_error(exc) from None

    def commit(self, offsets: Mapping[Source, int], asynchronous: bool) -> None:
        if not offsets:
            return
        try:
            listed = [_tp(s, o) for s, o in offsets.items()]
            if asynchronous:
                self._consumer.commit(offsets=listed, asynchronous=True)
                self._commits.asked()
            else:
                self._consumer.commit(offsets=listed, asynchronous=False)
                self._commits.confirmed()
        except KafkaException as exc:
            raise client_error(exc) from None

    def _commit_heard(self, error: KafkaError | None, partitions: list[Any]) -> None:
        """An asynchronous commit's result, served by a poll (librdkafka's `on_commit`
        serves asynchronous commits only: a synchronous one reports by returning)."""
        self._commits.heard(failed=error is not None or any(
            tp.error is not None for tp in partitions or ()))
        _commit_cb(error, partitions)

    def commit_pending(self) -> bool:
        return self._commits.pending

    def group_metadata(self) -> object:
        """Passed on as librdkafka gives it (`clients.GroupConsumer.group_metadata`): a member
        frozen past its session was fenced by the broker on this adapter in
        test_zombie_member.py, and refusing metadata without a generation here coincided with
        an intermittent broker-restart failure in CI that I could not reproduce."""
        return self._consumer.consumer_group_metadata()

    def lag(self, positions: Mapping[Source, int]) -> dict[Source, int]:
        """From the high watermark cached from the last fetch response and our positions
        (else the client's, else where the partition was last at its end): no broker round
        trip on the loop's thread."""
        return {source: max(0, high - position)
                for source, (position, high) in self._marks(positions).items()}

    def caught_up(self) -> dict[Source, int]:
        return {source: high for source, (position, high) in self._marks({}).items()
                if position >= high}

    def _marks(self, positions: Mapping[Source, int]) -> dict[Source, tuple[int, int]]:
        """(position, cached high watermark) of each assigned partition where both are
        known. The position is `positions`', else the client's (the next record it will hand
        out), else the offset of the partition's last end-of-partition event: librdkafka
        knows no position for a partition that has handed out nothing since its assignment
        (an empty one, or one whose committed offset is its end), where its event does."""
        try:
            assigned = self._consumer.assignment()
            known = {(tp.topic, tp.partition): tp.offset
                     for tp in self._consumer.position(assigned)}
        except KafkaException:
            return {}
        out: dict[Source, tuple[int, int]] = {}
        for tp in assigned:
            source = (tp.topic, tp.partition)
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            position = positions.get(source, known.get(source, -1))
            if position < 0:
                position = self._ends.get(source, -1)
            if high >= 0 and position >= 0:
                out[source] = (position, high)
        return out

    def topic_partitions(self, timeout_s: float) -> dict[str, int]:
        try:
            metadata = self._consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise self._explained(exc) from None
        return {name: len(t.partitions) for name, t in metadata.topics.items()
                if t.error is None}

    def close(self) -> None:
        self._consumer.close()


class RdkafkaReader:
    """A consumer outside any group (the client needs a group id; it never joins): assigned
    explicitly, read_committed, end-of-partition events on, never commits."""

    def __init__(self, settings: Settings, bulk: bool = False) -> None:
        self._watch = FailureWatch()
        config: dict[str, Any] = {
            **connection_config(settings, self._watch),
            "group.id": f"{settings.group_id}-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": READER_FETCH_WAIT_MS,
        }
        if bulk:  # restores read whole partitions: big fetches
            config["fetch.max.bytes"] = 64 * 1024 * 1024
            config["max.partition.fetch.bytes"] = 16 * 1024 * 1024
        self._settings = settings
        self._config = config
        self._assigned = False
        self._consumer = Consumer(config)

    def _explained(self, exc: KafkaException) -> ClientError:
        """The error, explained (a poll hears the error callback while nothing is assigned)."""
        serve = None if self._assigned else (lambda: self._consumer.poll(0))
        return explained(client_error(exc), self._watch, serve)

    def partitions(self, topic: str) -> list[int]:
        try:
            metadata = self._consumer.list_topics(
                topic, timeout=self._settings.bootstrap_timeout_ms / 1000.0)
        except KafkaException as exc:
            raise self._explained(exc) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def watermarks(self, source: Source, timeout_s: float) -> tuple[int, int]:
        """The first offset and the end: with isolation.level=read_committed librdkafka
        queries the last stable offset, what this reader can see."""
        try:
            low, high = self._consumer.get_watermark_offsets(_tp(source), timeout=timeout_s)
        except KafkaException as exc:
            raise self._explained(exc) from None
        return int(low), int(high)

    def log_end(self, source: Source, timeout_s: float) -> int:
        """The high watermark (records of open transactions included): librdkafka asks it
        of a read_uncommitted consumer only, so a short-lived one does."""
        consumer = Consumer({**self._config, "isolation.level": "read_uncommitted"})
        try:
            _low, high = consumer.get_watermark_offsets(_tp(source), timeout=timeout_s)
        except KafkaException as exc:
            raise explained(client_error(exc), self._watch, lambda: consumer.poll(0)) from None
        finally:
            consumer.close()
        return int(high)

    def offsets_for_time(self, sources: list[Source], at_ms: int) -> dict[Source, int | None]:
        timeout = self._settings.request_timeout_ms / 1000.0
        try:
            found = self._consumer.offsets_for_times([_tp(s, at_ms) for s in sources],
                                                     timeout=timeout)
        except KafkaException as exc:
            raise client_error(exc) from None
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in found}

    def assign(self, starts: Mapping[Source, int]) -> None:
        self._assigned = True
        self._consumer.assign([_tp(s, OFFSET_BEGINNING if o == BEGINNING else o)
                               for s, o in starts.items()])

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        try:
            return _polled(_batch(self._consumer, max_records, timeout_s), max_records)
        except KafkaException as exc:
            raise client_error(exc) from None

    def pause(self, sources: list[Source]) -> None:
        self._consumer.pause([_tp(s) for s in sources])

    def resume(self, sources: list[Source]) -> None:
        self._consumer.resume([_tp(s) for s in sources])

    def close(self) -> None:
        self._consumer.close()
