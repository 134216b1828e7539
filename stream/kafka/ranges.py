"""Read a bounded range of one or more topics without joining any consumer group.

The batch modes must not disturb the live scorer: a group-less reader (stream.kafka.clients
`Reader`) is assigned partitions explicitly (no subscription, so no rebalance of the live
group) and never commits, so the live group's offsets and members are untouched.

A range is resolved to `[start, end)` offsets per partition before reading, from explicit
offsets or from timestamps (`offsets_for_times`: the first record at or after the time),
and `end` defaults to the end of the partition when the replay starts, so a replay of a
topic that is still being written terminates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from stream.contracts.codec import DecodeError, parse_timestamp
from stream.core.ordering import TimeAligner
from stream.errors import ConfigError, InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Reader
from stream.kafka.records import Record, Source

Ranges = dict[Source, tuple[int, int]]


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


def _pick(values: dict[int, int] | None, partition: int) -> int | None:
    if values is None:
        return None
    return values.get(partition, values.get(-1))


def resolve(reader: Reader, topic: str, spec: RangeSpec) -> Ranges:
    """`[start, end)` offsets for every partition of `topic` under `spec`."""
    partitions = reader.partitions(topic)
    if not partitions:
        raise InfrastructureError(f"topic {topic!r} does not exist (or has no partitions)")
    sources = [(topic, p) for p in partitions]
    try:
        marks = {s: reader.watermarks(s, 30.0) for s in sources}
        first = {s: low for s, (low, _) in marks.items()}
        last = {s: high for s, (_, high) in marks.items()}
        at_start = _at_times(reader, sources, spec.from_time, last)
        at_end = _at_times(reader, sources, spec.to_time, last)
    except ClientError as exc:
        raise InfrastructureError(f"cannot list offsets of {topic!r}: {exc}") from None
    ranges: Ranges = {}
    for source in sources:
        start = _pick(spec.from_offsets, source[1])
        if start is None:
            start = at_start.get(source, first[source])
        end = _pick(spec.to_offsets, source[1])
        if end is None:
            end = at_end.get(source, last[source])
        start = min(max(start, first[source]), last[source])
        ranges[source] = (start, max(start, min(end, last[source])))
    return ranges


def _at_times(reader: Reader, sources: list[Source], at: float | None,
              last: dict[Source, int]) -> dict[Source, int]:
    if at is None:
        return {}
    found = reader.offsets_for_time(sources, int(at * 1000))
    # No record at or after the time: the range starts (or ends) at the partition's end.
    return {s: (offset if offset is not None else last[s]) for s, offset in found.items()}


def read_aligned(reader: Reader, ranges: Ranges, timeout_s: float = 60.0,
                 poll_s: float = 0.2) -> Iterator[list[Record]]:
    """Batches of records from every range, in event-time order across partitions and
    topics (the order the live loop uses: the records' decoded `timestamp`, see `event_time`),
    until every range is exhausted."""
    todo = {source: span for source, span in ranges.items() if span[1] > span[0]}
    if not todo:
        return
    reader.assign({source: start for source, (start, _) in todo.items()})
    aligner: TimeAligner[Record] = TimeAligner(event_time, max_wait_s=timeout_s,
                                               max_buffered=2**62)
    aligner.track(todo)
    finished: set[Source] = set()
    deadline = time.monotonic() + timeout_s
    while len(finished) < len(todo):
        try:
            polled = reader.poll(10_000, poll_s)
        except ClientError as exc:
            raise InfrastructureError(f"replay poll failed: {exc}") from None
        by_source: dict[Source, list[Record]] = {}
        for record in polled.records:
            source = record.source
            end = todo[source][1] if source in todo else -1
            if record.offset < end:
                by_source.setdefault(source, []).append(record)
            if record.next_offset >= end and source in todo:
                finished.add(source)
        for source, records in by_source.items():
            aligner.add(source, records)
            deadline = time.monotonic() + timeout_s
        finished.update(s for s in polled.at_end if s in todo)
        released = aligner.release(caught_up=finished)
        if released:
            yield released
        if time.monotonic() > deadline:
            stuck = ", ".join(f"{t}[{p}]" for t, p in todo if (t, p) not in finished)
            raise InfrastructureError(f"replay made no progress for {timeout_s:.0f}s on {stuck}")
    rest = aligner.drain()
    if rest:
        yield rest


def event_time(record: Record) -> float:
    """A record's event time for ordering: its decoded `timestamp` field (the one features
    use), -inf when it has none, so undecodable records leave first."""
    try:
        value = orjson.loads(record.value or b"")
        return parse_timestamp(value["timestamp"]) if isinstance(value, dict) else -math.inf
    except (orjson.JSONDecodeError, KeyError, DecodeError):
        return -math.inf
