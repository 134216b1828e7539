"""The kafka-python reader: a consumer outside any group (group_id=None), assigned explicitly,
read_committed, never committing; it restores changelogs and reads ranges for the batch modes.

Its end is the end offset ListOffsets returns under read_committed: the last stable offset
(kafka-python sends the consumer's isolation level). It is asked when the reader first polls
an assignment, and again when the position reaches it while the high watermark (from fetch
responses) has moved past it, at most every `_REFRESH_S`: a restore stops at the end it found,
a reader that keeps polling learns of records written since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import TopicPartition
from kafka import errors as kerr

from stream.kafka.kafkapython_consumer import (
    new_consumer,
    partition_states,
    refresh_metadata,
    seek_to,
    to_records,
    topic_partition,
    unpark,
)
from stream.kafka.kafkapython_errors import client_error
from stream.kafka.records import Polled, Source

log = logging.getLogger("stream.kafka")
_REFRESH_S = 0.2


class KafkaPythonReader:
    """A consumer outside any group (group_id=None): assigned explicitly, read_committed,
    never commits."""

    def __init__(self, options: dict[str, Any], timeout_s: float) -> None:
        self._consumer = new_consumer(options)
        self._options = options
        self._timeout_s = timeout_s
        self._ends: dict[TopicPartition, int] = {}
        self._asked: dict[TopicPartition, float] = {}

    def partitions(self, topic: str) -> list[int]:
        cluster = refresh_metadata(self._consumer, self._timeout_s)
        return sorted(cluster.partitions_for_topic(topic) or ())

    def watermarks(self, source: Source, timeout_s: float) -> tuple[int, int]:
        """The first offset, and the end offset as read_committed sees it (the last stable
        offset: kafka-python's ListOffsets carries the consumer's isolation level)."""
        tp, timeout_ms = topic_partition(source), max(1, int(timeout_s * 1000))
        try:
            low = self._consumer.beginning_offsets([tp], timeout_ms=timeout_ms)[tp]
            high = self._consumer.end_offsets([tp], timeout_ms=timeout_ms)[tp]
        except kerr.KafkaError as exc:
            raise client_error(exc, what="watermarks") from None
        return int(low), int(high)

    def log_end(self, source: Source, timeout_s: float) -> int:
        """The high watermark: the end offset a read_uncommitted consumer's ListOffsets
        returns (records of open transactions included), from a short-lived one."""
        tp, timeout_ms = topic_partition(source), max(1, int(timeout_s * 1000))
        consumer = new_consumer({**self._options, "isolation_level": "read_uncommitted"})
        try:
            return int(consumer.end_offsets([tp], timeout_ms=timeout_ms)[tp])
        except kerr.KafkaError as exc:
            raise client_error(exc, what="log end") from None
        finally:
            consumer.close(autocommit=False)

    def offsets_for_time(self, sources: list[Source], at_ms: int) -> dict[Source, int | None]:
        try:
            found = self._consumer.offsets_for_times({topic_partition(s): at_ms for s in sources},
                                                     timeout_ms=int(self._timeout_s * 1000))
        except kerr.KafkaError as exc:
            raise client_error(exc, what="offsets for time") from None
        return {(tp.topic, tp.partition): (None if at is None else at.offset)
                for tp, at in found.items()}

    def assign(self, starts: Mapping[Source, int]) -> None:
        self._ends.clear()
        self._consumer.assign([topic_partition(s) for s in starts])
        for source, offset in starts.items():
            seek_to(self._consumer, topic_partition(source), offset)

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        try:
            batch = self._consumer.poll(timeout_ms=max(0, int(timeout_s * 1000)),
                                        max_records=max_records)
        except kerr.KafkaError as exc:
            raise client_error(exc, what="poll") from None
        return Polled(to_records(batch) if batch else [], self._at_end(timeout_s))

    def _at_end(self, timeout_s: float) -> list[Source]:
        """Partitions whose position reached the end read_committed sees; the end is asked
        again (ListOffsets) when the position reaches it and the high watermark moved on."""
        states = partition_states(self._consumer)
        now, ends = time.monotonic(), self._ends
        stale = [tp for tp, position, high, _ in states if position is not None and (
            tp not in ends or (position >= ends[tp] and high is not None and high > ends[tp]
                               and now - self._asked.get(tp, 0.0) > _REFRESH_S))]
        if stale:
            try:
                ends.update(self._consumer.end_offsets(
                    stale, timeout_ms=max(1000, int(timeout_s * 1000))))
                self._asked.update(dict.fromkeys(stale, now))
            except kerr.KafkaError as exc:  # not known now: not reported at its end this time
                log.debug("reader end offsets: %s", exc)
        return [(tp.topic, tp.partition) for tp, position, _, _ in states
                if position is not None and tp in ends and position >= ends[tp]]

    def pause(self, sources: list[Source]) -> None:
        self._consumer.pause(*map(topic_partition, sources))

    def resume(self, sources: list[Source]) -> None:
        resumed = list(map(topic_partition, sources))
        self._consumer.resume(*resumed)
        unpark(self._consumer, resumed)

    def close(self) -> None:
        self._consumer.close(autocommit=False)
