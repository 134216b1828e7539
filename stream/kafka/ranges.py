"""Read a bounded range of one or more topics without joining any consumer group.

The batch modes must not disturb the live scorer: a consumer with `group_id=None` is
assigned partitions explicitly (`assign()`, no subscription, so no rebalance of the live
group) and never commits, so the live group's offsets and members are untouched.

A range is resolved to `[start, end)` offsets per partition before reading, from explicit
offsets or from timestamps (`offsets_for_times`: the first record at or after the time),
and `end` defaults to the end of the partition when the replay starts, so a replay of a
topic that is still being written terminates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from stream.config import Settings
from stream.contracts.codec import parse_timestamp
from stream.core.ordering import TimeAligner
from stream.errors import ConfigError, InfrastructureError

Ranges = dict[TopicPartition, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """Where a replay starts and stops; offsets win over times, unset means the topic's ends.

    Offsets are per partition; the key -1 means "every partition".
    """

    from_offsets: dict[int, int] | None = None
    from_time: float | None = None
    to_offsets: dict[int, int] | None = None
    to_time: float | None = None


def parse_offsets(text: str | None) -> dict[int, int] | None:
    """`"1500"` (every partition) or `"0:100,1:250"` (per partition)."""
    if text is None:
        return None
    try:
        if ":" not in text:
            return {-1: int(text)}
        pairs = (part.split(":") for part in text.split(",") if part.strip())
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise ConfigError(f"bad offsets {text!r}: use N or PARTITION:OFFSET,...") from None


def parse_time(text: str | None) -> float | None:
    """RFC 3339 text or epoch milliseconds, to epoch seconds."""
    if text is None:
        return None
    value: Any = int(text) if text.strip().isdigit() else text
    try:
        return parse_timestamp(value)
    except ValueError:
        raise ConfigError(f"bad time {text!r}: use RFC 3339 or epoch milliseconds") from None


def range_consumer(settings: Settings) -> Any:
    """A group-less, never-committing consumer (see the module docstring for why)."""
    options: dict[str, Any] = {
        **settings.kafka_options(),
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "max_poll_records": settings.max_poll_records,
        "fetch_max_wait_ms": 100,
        "metrics_enabled": False,
    }
    try:
        return KafkaConsumer(**options)
    except KafkaTimeoutError:
        raise InfrastructureError(
            f"cannot reach Kafka at {settings.bootstrap_servers}; is the broker up?") from None
    except KafkaError as exc:
        raise InfrastructureError(f"Kafka error while creating the consumer: {exc}") from None


def _pick(values: dict[int, int] | None, partition: int) -> int | None:
    if values is None:
        return None
    return values.get(partition, values.get(-1))


def resolve(consumer: Any, topic: str, spec: RangeSpec) -> Ranges:
    """`[start, end)` offsets for every partition of `topic` under `spec`."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise InfrastructureError(f"topic {topic!r} does not exist (or has no partitions)")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    try:
        first = consumer.beginning_offsets(tps)
        last = consumer.end_offsets(tps)
        at_start = _at_times(consumer, tps, spec.from_time, last)
        at_end = _at_times(consumer, tps, spec.to_time, last)
    except KafkaError as exc:
        raise InfrastructureError(f"cannot list offsets of {topic!r}: {exc}") from None
    ranges: Ranges = {}
    for tp in tps:
        start = _pick(spec.from_offsets, tp.partition)
        if start is None:
            start = at_start.get(tp, first[tp])
        end = _pick(spec.to_offsets, tp.partition)
        if end is None:
            end = at_end.get(tp, last[tp])
        start = min(max(start, first[tp]), last[tp])
        ranges[tp] = (start, max(start, min(end, last[tp])))
    return ranges


def _at_times(
    consumer: Any, tps: list[TopicPartition], at: float | None, last: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    if at is None:
        return {}
    found = consumer.offsets_for_times({tp: int(at * 1000) for tp in tps})
    # No record at or after the time: the range starts (or ends) at the partition's end.
    return {tp: (found[tp].offset if found.get(tp) is not None else last[tp]) for tp in tps}


def read_aligned(
    consumer: Any, ranges: Ranges, timeout_s: float = 60.0, poll_ms: int = 200
) -> Iterator[list[Any]]:
    """Batches of records from every range, in record-timestamp order across partitions
    and topics (the order the live loop uses), until every range is exhausted."""
    todo = {tp: span for tp, span in ranges.items() if span[1] > span[0]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, (start, _) in todo.items():
        consumer.seek(tp, start)
    aligner: TimeAligner[Any] = TimeAligner(lambda r: r.timestamp, max_wait_s=timeout_s)
    aligner.track(todo)
    finished: set[TopicPartition] = set()
    deadline = time.monotonic() + timeout_s
    while len(finished) < len(todo):
        try:
            batch = consumer.poll(timeout_ms=poll_ms)
        except KafkaError as exc:
            raise InfrastructureError(f"replay poll failed: {exc}") from None
        for tp, records in batch.items():
            end = todo[tp][1]
            aligner.add(tp, [r for r in records if r.offset < end])
            deadline = time.monotonic() + timeout_s
        for tp, (_, end) in todo.items():
            if tp not in finished and consumer.position(tp) >= end:
                finished.add(tp)
                consumer.pause(tp)
        released = aligner.release(caught_up=finished)
        if released:
            yield released
        if time.monotonic() > deadline:
            stuck = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in todo if tp not in finished)
            raise InfrastructureError(f"replay made no progress for {timeout_s:.0f}s on {stuck}")
    rest = aligner.drain()
    if rest:
        yield rest
