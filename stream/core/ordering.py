"""Event-time alignment of records from several partitions (transactions and labels).

A label must not be applied before its transaction is scored, and a replay of history must
see transactions and labels interleaved as they happened. Merging each polled batch by
timestamp is not enough: one poll may return a partition's records from later in time than
another partition's next, not yet fetched, records. So records are buffered per source and
released in timestamp order, holding a source's records back only while another source
might still deliver something earlier: it is empty *and* not caught up (the broker has more
for it) *and* has been waited for less than `max_wait_s`. This is Kafka Streams' record
buffer with `max.task.idle.ms`.

Generic over the record type and the source key, no I/O: the caller says which sources are
caught up (live: position at the high watermark; replay: position at the range's end).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Generic, TypeVar

R = TypeVar("R")


def _identity(source: Any) -> Any:
    return source


class TimeAligner(Generic[R]):
    """Buffer records per source; release them in timestamp order when it is safe.

    >>> aligner = TimeAligner(lambda r: r[0], max_wait_s=60.0, clock=lambda: 0.0)
    >>> aligner.track(["tx", "labels"])
    >>> aligner.add("tx", [(1, "t1"), (5, "t5")])
    >>> aligner.release(caught_up=set())     # labels might still bring something earlier
    []
    >>> aligner.add("labels", [(3, "l3")])
    >>> aligner.release(caught_up=set())     # tx holds 5: safe up to the labels' next record
    [(1, 't1'), (3, 'l3')]
    >>> aligner.release(caught_up={"labels"})
    [(5, 't5')]
    """

    def __init__(
        self, timestamp: Callable[[R], float], max_wait_s: float = 1.0,
        max_buffered: int = 100_000, clock: Callable[[], float] = time.monotonic,
        rank: Callable[[Any], Any] | None = None,
    ) -> None:
        self.timestamp = timestamp
        # Equal timestamps leave in the order of `rank(source)` (default: the source itself),
        # never in arrival order: the same records give the same order however they were
        # polled, which is what makes a live run and an in-process replay agree exactly.
        self.rank = rank if rank is not None else _identity
        self.max_wait_s = max_wait_s
        self.max_buffered = max_buffered
        self.clock = clock
        self._buffers: dict[Hashable, deque[R]] = {}
        self._empty_since: dict[Hashable, float] = {}
        self._order: dict[Hashable, int] = {}
        self._size = 0
        self.forced = 0  # records released past a waited-for source because the buffer was full
        # Records released while an empty source that was not caught up had been waited for
        # `max_wait_s` in vain: their order against that source's next records is not assured.
        self.timed_out = 0
        # False when the last release gave up waiting for a source (see `timed_out`).
        self.last_aligned = True

    def __len__(self) -> int:
        return self._size

    def track(self, sources: Iterable[Hashable]) -> None:
        """Set the sources to align (on assignment); dropped sources lose their buffers."""
        wanted = list(sources)
        for source in list(self._buffers):
            if source not in wanted:
                self._size -= len(self._buffers.pop(source))
                self._empty_since.pop(source, None)
        now = self.clock()
        for source in wanted:
            if source not in self._buffers:
                self._buffers[source] = deque()
                self._empty_since[source] = now
        self._reorder()

    def _reorder(self) -> None:
        self._order = {src: i for i, src in enumerate(sorted(self._buffers, key=self.rank))}

    def sources(self) -> list[Any]:
        """The tracked sources."""
        return list(self._buffers)

    def buffered(self, source: Hashable) -> int:
        """Records held for one source (the caller pauses a source that runs far ahead)."""
        buffer = self._buffers.get(source)
        return len(buffer) if buffer is not None else 0

    def head(self, source: Hashable) -> float | None:
        """The timestamp of the source's next record; None when it holds none."""
        buffer = self._buffers.get(source)
        return self.timestamp(buffer[0]) if buffer else None

    def restart_waits(self, sources: Iterable[Hashable] | None = None) -> None:
        """Empty sources are waited for afresh from now: after a restore, which can take
        longer than `max_wait_s` and during which nothing is fetched. Waits started at the
        assignment would have run out before the first fetch, and the first partition
        fetched would be released ahead of the others' earlier records.

        >>> now = [0.0]
        >>> aligner = TimeAligner(lambda r: r, max_wait_s=2.0, clock=lambda: now[0])
        >>> aligner.track(["a", "b"]); now[0] = 5.0  # a 5-second restore
        >>> aligner.restart_waits(); aligner.add("a", [7])
        >>> aligner.release(caught_up=set()), aligner.timed_out  # b is waited for
        ([], 0)

        `sources`: only these (the others' waits go on).
        """
        now = self.clock()
        chosen = self._buffers if sources is None else sources
        for source in chosen:
            if not self._buffers.get(source, True):  # tracked and empty
                self._empty_since[source] = now

    def clear(self) -> None:
        """Forget every buffered record (after a rewind: the records are fetched again)."""
        now = self.clock()
        for source, buffer in self._buffers.items():
            buffer.clear()
            self._empty_since[source] = now
        self._size = 0

    def add(self, source: Hashable, records: Iterable[R]) -> None:
        """Records polled from one source, in its own (offset) order."""
        buffer = self._buffers.get(source)
        if buffer is None:
            buffer = self._buffers[source] = deque()
            self._reorder()
        before = len(buffer)
        buffer.extend(records)
        self._size += len(buffer) - before
        if buffer:
            self._empty_since.pop(source, None)

    def release(self, caught_up: AbstractSet[Any], until: float = float("inf"),
                most: float = float("inf")) -> list[R]:
        """Every record that is now safe to process, in timestamp order; none later than
        `until` (the caller's own bound: the shared merchant table's, for one), and at most
        `most` of them (the rest stay safe: a source's later records come after its own).

        >>> aligner = TimeAligner(lambda r: r, max_wait_s=0.0, clock=lambda: 0.0)
        >>> aligner.track(["a", "b"]); aligner.add("a", [1, 4]); aligner.add("b", [2, 3])
        >>> aligner.release(caught_up={"a", "b"}, most=3), len(aligner)
        ([1, 2, 3], 1)
        """
        now = self.clock()
        out: list[R] = []
        order = self._order
        heads = [(self.timestamp(buf[0]), order[src], src)
                 for src, buf in self._buffers.items() if buf]
        heapq.heapify(heads)
        blocked = any(self._waiting(src, since, caught_up, now)
                      for src, since in self._empty_since.items())
        gave_up = not blocked and any(src not in caught_up for src in self._empty_since)
        while heads and len(out) < most:
            if blocked:
                if self._size <= self.max_buffered:
                    break
                self.forced += 1  # memory first: release the oldest rather than grow
            if heads[0][0] > until:
                break
            _, _, source = heapq.heappop(heads)
            buffer = self._buffers[source]
            out.append(buffer.popleft())
            self._size -= 1
            if buffer:
                heapq.heappush(heads, (self.timestamp(buffer[0]), order[source], source))
            else:
                self._empty_since[source] = now
                blocked = blocked or self._waiting(source, now, caught_up, now)
        if gave_up and out:
            self.timed_out += len(out)
        self.last_aligned = not (gave_up and out)
        return out

    def _waiting(self, source: Hashable, since: float,
                 caught_up: AbstractSet[Any], now: float) -> bool:
        """An empty source that may still deliver an earlier record, and is worth waiting for."""
        return source not in caught_up and now - since < self.max_wait_s

    def drain(self) -> list[R]:
        """Everything buffered, in timestamp order (end of a bounded replay, shutdown)."""
        return self.release(caught_up=frozenset(self._buffers))
