"""Reading a changelog partition back: the Kafka half of a restore (the encoding is pure,
in stream/state/changelog.py).

A partition's state is its changelog partition read from the start to its end and folded key
by key, the last value winning, as Kafka Streams restores a store. The reader is read_committed,
so a checkpoint that was aborted, or is still open, is never restored. Each record's writer
(its `application_id` header) is counted on the way, for the ownership check
(`stream.state.changelog.check_ownership`, applied by stream/serving/recovery.py).

A transaction still open when the restore starts is waited for. Its writer can only be an
instance that lost the partition (one SIGKILLed, or cut off): its transaction will be
aborted, but while it is open the last stable offset stays at its first record, and
read_committed stops there, also before every checkpoint committed after it. Those exist
when the partition moved twice within `transaction.timeout.ms` of a crash: the second owner
committed checkpoints (and their input offsets) behind the crashed one's open transaction.
Restoring up to the last stable offset then would give the third owner state older than
its committed offsets (events scored again on top of state that has not seen them, labels
learned twice or never). So the restore first waits until the last stable offset reaches
the log end it found (the broker aborts the crashed instance's transaction within
`transaction.timeout.ms` plus its 10-second check), up to `settle_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from stream.errors import InfrastructureError
from stream.kafka.classify import ClientError
from stream.kafka.clients import Reader
from stream.kafka.records import BEGINNING, Record
from stream.state.changelog import RestoredState, fold, writer_of

log = logging.getLogger("stream.kafka")
Progress = Callable[[int, int], None]


def read_partition(reader: Reader, topic: str, partition: int, progress: Progress | None = None,
                   poll_s: float = 0.2, stall_s: float = 60.0,
                   settle_s: float = 75.0) -> RestoredState:
    """One changelog partition, folded, once the transactions open at the start have ended
    (module docstring; InfrastructureError after `settle_s`). `progress(done, total)` is
    called about once a second, so a long restore shows in the log and in a metric; a
    restore that makes no progress for `stall_s` (broker gone) raises InfrastructureError."""
    source = (topic, partition)
    try:
        low, high = _settled(reader, source, stall_s, settle_s)
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


def _settled(reader: Reader, source: tuple[str, int], timeout_s: float,
             settle_s: float, wait_s: float = 0.25) -> tuple[int, int]:
    """The first offset and the last stable offset, once the latter reached the log end
    found at the start: every transaction open then has been committed or aborted."""
    low, stable = reader.watermarks(source, timeout_s)
    end = reader.log_end(source, timeout_s)
    if stable >= end:
        return low, stable
    topic, partition = source
    log.info("%s[%d]: a transaction is open (last stable offset %d, log end %d), most likely "
             "a stopped instance's; waiting for it to end before restoring (up to %.0fs)",
             topic, partition, stable, end, settle_s)
    started = time.monotonic()
    while stable < end:
        if time.monotonic() - started > settle_s:
            raise InfrastructureError(
                f"{topic}[{partition}]: a transaction open before the restore did not end "
                f"within {settle_s:.0f}s (last stable offset {stable}, log end {end}); "
                "restoring before it would miss checkpoints committed after it")
        time.sleep(wait_s)
        low, stable = reader.watermarks(source, timeout_s)
    log.info("%s[%d]: the open transaction ended after %.1fs", topic, partition,
             time.monotonic() - started)
    return low, stable


def batches_to_end(reader: Reader, source: tuple[str, int], high: int, poll_s: float = 0.2,
                   stall_s: float = 60.0, what: str = "changelog read"
                   ) -> Iterator[list[Record]]:
    """The records of `source` (assigned by the caller) up to offset `high`, a poll's worth
    at a time: how a compacted topic is read back (a changelog partition, the merchant
    images). InfrastructureError, naming `what`, when a poll fails or nothing comes for
    `stall_s` (broker gone)."""
    last_progress = time.monotonic()
    while True:
        try:
            polled = reader.poll(10_000, poll_s)
        except ClientError as exc:
            raise InfrastructureError(f"{what} failed: {exc}") from None
        now = time.monotonic()
        if polled.records:
            last_progress = now
            yield polled.records
            if polled.records[-1].next_offset >= high:
                return
        if source in polled.at_end:
            return
        if now - last_progress > stall_s:
            raise InfrastructureError(f"{what} made no progress for {stall_s:.0f}s")


def _read_to_end(reader: Reader, state: RestoredState, source: tuple[str, int], low: int,
                 high: int, total: int, progress: Progress | None, poll_s: float,
                 stall_s: float) -> None:
    next_report = time.monotonic() + 1.0
    for records in batches_to_end(reader, source, high, poll_s, stall_s):
        for record in records:
            fold(state, record.key or b"", record.value,
                 writer_of(record.headers) if record.headers else None)
        if progress is not None and time.monotonic() >= next_report:
            progress(records[-1].next_offset - low, total)
            next_report = time.monotonic() + 1.0
