"""What the model saw at decision time, kept until the transaction's label arrives.

Chargebacks arrive days after the payment. To learn from them honestly the model must
learn from the features it scored with, not from features recomputed later (the card's
history has moved on by then), and the evaluation must use the score production gave.
"""

from __future__ import annotations

import heapq
from array import array
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decided:
    """One scored transaction waiting for its label.

    Features are stored as a packed array in the extractor's `feature_names` order: a
    buffer of a million entries costs ~250 MB instead of ~1.5 GB as dicts.
    """

    partition: int
    merchant_id: str
    timestamp: float
    score: float
    features: array
    # Every model's decision-time score (champion and challengers, in the pipeline's fixed
    # name order); empty when there are no challengers.
    shadow: tuple[float, ...] = ()


class PendingBuffer:
    """Bounded, TTL'd map from transaction id to its decision-time record.

    Insertion order is event order (per partition), so the oldest entries are at the front
    and both the size bound and the TTL are enforced by popping from the front: O(1) each.

    >>> buf = PendingBuffer(max_size=2, ttl_s=10.0)
    >>> for i in range(3):
    ...     _ = buf.put(f"t{i}", Decided(0, "m", float(i), 0.1, array("d")))
    >>> buf.pop("t0") is None, buf.dropped_full
    (True, 1)
    """

    def __init__(self, max_size: int, ttl_s: float) -> None:
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, Decided] = OrderedDict()
        self.dropped_full = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, transaction_id: object) -> bool:
        return transaction_id in self._entries

    def put(self, transaction_id: str, decided: Decided) -> tuple[str, Decided] | None:
        """Add an entry; returns the oldest entry when the size bound pushed it out."""
        self._entries[transaction_id] = decided
        if len(self._entries) > self.max_size:
            self.dropped_full += 1
            return self._entries.popitem(last=False)
        return None

    def pop(self, transaction_id: str) -> Decided | None:
        return self._entries.pop(transaction_id, None)

    def expire(self, now: float) -> list[tuple[str, Decided]]:
        """Drop and return entries older than the TTL in event time."""
        out = self.pop_older_than(now - self.ttl_s)
        self.expired += len(out)
        return out

    def pop_older_than(self, horizon: float) -> list[tuple[str, Decided]]:
        """Remove and return entries decided before `horizon` (event time), oldest first;
        for the "no chargeback within N days" rule. Unlike `expire`, not counted as expired.

        >>> buf = PendingBuffer(max_size=10, ttl_s=100.0)
        >>> for i in range(3):
        ...     _ = buf.put(f"t{i}", Decided(0, "m", float(i), 0.1, array("d")))
        >>> [k for k, _ in buf.pop_older_than(2.0)], len(buf)
        (['t0', 't1'], 1)
        """
        out: list[tuple[str, Decided]] = []
        entries = self._entries
        while entries:
            tx_id, decided = next(iter(entries.items()))
            if decided.timestamp >= horizon:
                break
            entries.popitem(last=False)
            out.append((tx_id, decided))
        return out

    def items_for(self, partition: int) -> list[tuple[str, Decided]]:
        """One partition's entries, oldest first (for its snapshot)."""
        return [(k, v) for k, v in self._entries.items() if v.partition == partition]

    def drop_partition(self, partition: int) -> int:
        """Forget a revoked partition's entries; its new owner rebuilds them."""
        doomed = [k for k, v in self._entries.items() if v.partition == partition]
        for key in doomed:
            del self._entries[key]
        return len(doomed)


class DueLabels:
    """In-event labels replayed as if they arrived `delay_s` later in event time.

    >>> due = DueLabels(delay_s=60.0)
    >>> due.push("t1", True, timestamp=0.0)
    >>> due.release(59.0), due.release(60.0)
    ([], [('t1', True)])
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._heap: list[tuple[float, int, str, bool]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, transaction_id: str, is_fraud: bool, timestamp: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (timestamp + self.delay_s, self._seq, transaction_id, is_fraud))

    def items(self) -> list[tuple[float, int, str, bool]]:
        """The queue as plain tuples (due time, sequence, transaction id, label)."""
        return list(self._heap)

    def restore(self, items: list[tuple[float, int, str, bool]]) -> None:
        self._heap = [tuple(item) for item in items]  # type: ignore[misc]
        heapq.heapify(self._heap)
        self._seq = max((item[1] for item in self._heap), default=0)

    def release(self, now: float) -> list[tuple[str, bool]]:
        """Labels whose due time has been reached by the stream's event time."""
        out: list[tuple[str, bool]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, tx_id, label = heapq.heappop(heap)
            out.append((tx_id, label))
        return out
