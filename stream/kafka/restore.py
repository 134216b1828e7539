"""Reading a changelog partition back: the Kafka half of a restore (the encoding is pure,
in stream/state/changelog.py).

A partition's state is its changelog partition read from the start to its end and folded key
by key, the last value winning, as Kafka Streams restores a store. The reader is read_committed,
so a checkpoint that was aborted, or is still open, is never restored. Each record's writer
(its `application_id` header) is counted on the way, for the ownership check
(`stream.state.changelog.check_ownership`, applied by stream/serving/recovery.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Reader
from stream.kafka.records import BEGINNING
from stream.state.changelog import RestoredState, fold, writer_of

Progress = Callable[[int, int], None]


def read_partition(reader: Reader, topic: str, partition: int, progress: Progress | None = None,
                   poll_s: float = 0.2, stall_s: float = 60.0) -> RestoredState:
    """One changelog partition, folded. `progress(done, total)` is called about once a
    second, so a long restore shows in the log and in a metric; a restore that makes no
    progress for `stall_s` (broker gone) raises InfrastructureError."""
    source = (topic, partition)
    try:
        low, high = reader.watermarks(source, stall_s)
    except ClientError as exc:
        raise InfrastructureError(f"cannot read {topic}[{partition}]: {exc}") from None
    state = RestoredState()
    total = max(0, high - low)
    if total > 0:
        reader.assign({source: BEGINNING})
        _read_to_end(reader, state, source, low, high, total, progress, poll_s, stall_s)
    if progress is not None:
        progress(total, total)
    return state


def _read_to_end(reader: Reader, state: RestoredState, source: tuple[str, int], low: int,
                 high: int, total: int, progress: Progress | None, poll_s: float,
                 stall_s: float) -> None:
    now = time.monotonic()
    next_report, last_progress = now + 1.0, now
    done = 0
    while True:
        try:
            polled = reader.poll(10_000, poll_s)
        except ClientError as exc:
            raise InfrastructureError(f"changelog read failed: {exc}") from None
        now = time.monotonic()
        for record in polled.records:
            fold(state, record.key or b"", record.value,
                 writer_of(record.headers) if record.headers else None)
            done = record.next_offset - low
            last_progress = now
        if source in polled.at_end or low + done >= high:
            return
        if now - last_progress > stall_s:
            raise InfrastructureError(f"changelog read made no progress for {stall_s:.0f}s")
        if progress is not None and now >= next_report:
            progress(done, total)
            next_report = now + 1.0
