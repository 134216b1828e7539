"""What crosses the Kafka edge, in one shape whatever the client: a consumed record, the
result of one poll, and the name of a topic partition.

librdkafka hands out messages whose fields are methods, kafka-python named tuples whose fields
are attributes; each adapter turns its own into `Record`, so nothing past this package knows
which client ran. A poll also says which partitions it found at their end (librdkafka's
end-of-partition events, kafka-python's position at the high watermark): event-time alignment
stops waiting for a partition that has nothing more to give.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Source = tuple[str, int]
"""A topic partition, as (topic, partition)."""

Headers = tuple[tuple[str, bytes], ...]

BEGINNING = -2
"""The offset that means "the first record still in the partition" (Kafka's OFFSET_BEGINNING)."""


@dataclass(slots=True)
class Record:
    """One consumed record.

    >>> r = Record("transactions", 3, 41, b"card-1", b"{}", 1_767_225_600_000)
    >>> r.source, r.next_offset
    (('transactions', 3), 42)
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0
    headers: Headers = ()

    @property
    def source(self) -> Source:
        return (self.topic, self.partition)

    @property
    def next_offset(self) -> int:
        """The offset to commit once this record is done."""
        return self.offset + 1


@dataclass(slots=True)
class Polled:
    """One poll: the records in each partition's offset order, then the partitions found at
    their end after them. `more`: the poll was cut at its `max_records`, so the client may
    hold records of any partition fetched behind those returned (the event-time intake
    doubts an earlier end of partition meanwhile: serving/intake.py)."""

    records: list[Record] = field(default_factory=list)
    at_end: list[Source] = field(default_factory=list)
    more: bool = False
