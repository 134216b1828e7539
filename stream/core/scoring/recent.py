"""A bounded memory of recent transaction ids, for duplicates and label corrections.

A producer that retries, or an upstream service that replays after a crash, sends the same
`transaction_id` again; a case-management system can send a label and later its correction.
To answer both deliberately the partition remembers, for a while, what it decided on each
transaction (`score`, `decision`) and what it learned from each label (the decision-time
features and the label). This is that memory: an ordered map with a size bound and an
event-time window, O(1) per id, whose changes since the last checkpoint are drained for the
changelog and which is restored in the order it was built (each entry carries a sequence
number), so that a restarted scorer forgets exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")


class RecentIds(Generic[V]):
    """Transaction id -> (sequence, event time, value), oldest first, bounded by size and
    by `window_s` of event time; `max_size=0` (or `window_s=0`) turns it off.

    >>> memory = RecentIds[str](max_size=2, window_s=60.0, track_changes=True)
    >>> memory.put("t1", 1, 0.0, "approve"); memory.put("t2", 2, 30.0, "decline")
    >>> memory.put("t3", 3, 50.0, "review")  # the size bound forgets t1
    >>> memory.get("t1"), memory.get("t3"), memory.expire(100.0), len(memory)
    (None, 'review', 1, 1)
    >>> sorted(memory.drain_changes().items())  # doctest: +NORMALIZE_WHITESPACE
    [('t1', None), ('t2', None), ('t3', (3, 50.0, 'review'))]
    """

    def __init__(self, max_size: int, window_s: float, track_changes: bool = False) -> None:
        self.max_size = max_size
        self.window_s = window_s
        self.track_changes = track_changes
        self.enabled = max_size > 0 and window_s > 0
        self._entries: OrderedDict[str, tuple[int, float, V]] = OrderedDict()
        self._changes: dict[str, tuple[int, float, V] | None] = {}
        self._next = 0  # past the highest sequence number ever remembered
        # At most the front entry's event time (inf when empty): `expire` is one comparison
        # until the front can go, so it is called on every event and forgets a few ids at a
        # time instead of thousands in one stall.
        self._front_at = math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, transaction_id: str) -> V | None:
        entry = self._entries.get(transaction_id)
        return None if entry is None else entry[2]

    def entry(self, transaction_id: str) -> tuple[int, float, V] | None:
        """The id's (sequence, event time, value), or None."""
        return self._entries.get(transaction_id)

    def put(self, transaction_id: str, seq: int, timestamp: float, value: V) -> None:
        """Remember an id; the oldest goes past `max_size`. A known id keeps its place, its
        sequence and its time, and takes the new value: the order stays the sequence order,
        which is the order a restore puts back."""
        if not self.enabled:
            return
        entries = self._entries
        known = entries.get(transaction_id)
        if known is not None:
            seq, timestamp = known[0], known[1]
        entry = entries[transaction_id] = (seq, timestamp, value)
        if seq >= self._next:
            self._next = seq + 1
        if self.track_changes:
            self._changes[transaction_id] = entry
        if timestamp < self._front_at:
            self._front_at = timestamp
        if known is None and len(entries) > self.max_size:
            self._forget(entries.popitem(last=False)[0])
            self._front_at = -math.inf  # the next front's time is not known: look next time

    def front(self) -> int:
        """The sequence number of the oldest entry (past the newest ever remembered when
        empty): entries are forgotten oldest first only, so everything remembered is the
        entries at or past it, which is what the changelog's segments rely on.

        >>> memory = RecentIds[str](max_size=2, window_s=60.0)
        >>> memory.put("t1", 1, 0.0, "a"); memory.put("t2", 2, 1.0, "b"); memory.front()
        1
        >>> memory.put("t3", 3, 2.0, "c"); memory.front(), memory.expire(100.0), memory.front()
        (2, 2, 4)
        """
        for seq, _, _ in self._entries.values():
            return seq
        return self._next

    def changed(self, transaction_ids: Iterable[str]) -> None:
        """Count these remembered ids as changed: the next drain writes them again."""
        if self.track_changes:
            for tx_id in transaction_ids:
                entry = self._entries.get(tx_id)
                if entry is not None:
                    self._changes[tx_id] = entry

    def items(self) -> list[tuple[str, tuple[int, float, V]]]:
        """Every entry, oldest first: (id, (sequence, event time, value))."""
        return list(self._entries.items())

    def expire(self, now: float) -> int:
        """Forget ids older than the window at event time `now`, from the front (the
        insertion order is event order within a partition); returns how many.

        One comparison while the front is inside the window, so a caller can forget as the
        clock moves (every event) rather than in periodic sweeps, whose thousands of ids at
        once stalled the scorer for 12-30 ms a partition.

        >>> memory = RecentIds[str](max_size=10, window_s=60.0)
        >>> for i in range(3): memory.put(f"t{i}", i, 10.0 * i, "approve")
        >>> memory.expire(65.0), memory.expire(66.0), memory.expire(75.0), len(memory)
        (1, 0, 1, 1)
        """
        horizon = now - self.window_s
        if horizon <= self._front_at:
            return 0
        entries, n = self._entries, 0
        front_at = math.inf
        while entries:
            tx_id, (_, timestamp, _) = next(iter(entries.items()))
            if timestamp >= horizon:
                front_at = timestamp
                break
            entries.popitem(last=False)
            self._forget(tx_id)
            n += 1
        self._front_at = front_at
        return n

    def _forget(self, transaction_id: str) -> None:
        if self.track_changes:
            self._changes[transaction_id] = None

    def drain_changes(self) -> dict[str, tuple[int, float, V] | None]:
        """What changed since the last drain (None: forgotten), for the changelog."""
        changes, self._changes = self._changes, {}
        return changes

    def restore(self, entries: Iterable[tuple[str, tuple[int, float, V]]],
                front: int = 0) -> None:
        """Entries read back from a changelog, put back in their sequence order (the order
        they were remembered in), so size bound and window forget the same ids next;
        `front`, the changelog's, keeps `front()` where it was when nothing is left."""
        self._next = max(self._next, front)
        for tx_id, entry in sorted(entries, key=lambda item: item[1][0]):
            self._entries[tx_id] = entry
            self._next = max(self._next, entry[0] + 1)
        self._front_at = -math.inf
