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

from stream.core.budget import PENDING_ENTRY_BYTES, ByteBudget

NOTHING: tuple[tuple[str, Decided], ...] = ()  # put's usual answer, shared: nothing pushed out


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


def entry_bytes(transaction_id: str, decided: Decided) -> int:
    """The estimated memory of one entry (core/budget.py): a fixed cost plus its ids and
    numbers, with no walk over the objects.

    >>> entry_bytes("t" * 1000, Decided(0, "m", 0.0, 0.1, array("d", [0.0] * 30)))
    1625
    """
    return (PENDING_ENTRY_BYTES + len(transaction_id) + len(decided.merchant_id)
            + 8 * (len(decided.features) + len(decided.shadow)))


class PendingBuffer:
    """Bounded, TTL'd map from transaction id to its decision-time record.

    Insertion order is event order (per partition), so the oldest entries are at the front
    and the size bound, the byte budget and the TTL are all enforced by popping from the
    front: O(1) each. Entries dropped for the size bound are counted in `dropped_full`,
    those dropped for the byte budget in `budget.dropped`.

    >>> buf = PendingBuffer(max_size=2, ttl_s=10.0)
    >>> for i in range(3):
    ...     _ = buf.put(f"t{i}", Decided(0, "m", float(i), 0.1, array("d")))
    >>> buf.pop("t0") is None, buf.dropped_full
    (True, 1)
    >>> buf = PendingBuffer(max_size=100, ttl_s=10.0, max_bytes=2000)
    >>> for i in range(3):  # ~800 bytes each: the third pushes the first out
    ...     _ = buf.put(f"t{i}" * 200, Decided(0, "m", float(i), 0.1, array("d")))
    >>> len(buf), buf.budget.dropped, buf.budget.used <= 2000
    (2, 1, True)
    """

    def __init__(self, max_size: int, ttl_s: float, max_bytes: int = 2**62) -> None:
        self.max_size = max_size
        self.ttl_s = ttl_s
        self.budget = ByteBudget(max_bytes)
        self._entries: OrderedDict[str, Decided] = OrderedDict()
        self.dropped_full = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, transaction_id: object) -> bool:
        return transaction_id in self._entries

    def put(self, transaction_id: str,
            decided: Decided) -> list[tuple[str, Decided]] | tuple[tuple[str, Decided], ...]:
        """Add an entry; returns the oldest entries the size bound or the byte budget pushed
        out (usually none)."""
        entries, budget = self._entries, self.budget
        old = entries.get(transaction_id)
        if old is not None:
            budget.remove(entry_bytes(transaction_id, old))
        entries[transaction_id] = decided
        over = budget.add(entry_bytes(transaction_id, decided))
        if len(entries) <= self.max_size and not over:
            return NOTHING
        out: list[tuple[str, Decided]] = []
        if len(entries) > self.max_size:
            self.dropped_full += 1
            out.append(self._pop_oldest())
        while budget.over and len(entries) > 1:
            budget.dropped += 1
            out.append(self._pop_oldest())
        return out

    def _pop_oldest(self) -> tuple[str, Decided]:
        tx_id, decided = self._entries.popitem(last=False)
        self.budget.remove(entry_bytes(tx_id, decided))
        return tx_id, decided

    def pop(self, transaction_id: str) -> Decided | None:
        decided = self._entries.pop(transaction_id, None)
        if decided is not None:
            self.budget.remove(entry_bytes(transaction_id, decided))
        return decided

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
            out.append(self._pop_oldest())
        return out

    def items_for(self, partition: int) -> list[tuple[str, Decided]]:
        """One partition's entries, oldest first (for its snapshot)."""
        return [(k, v) for k, v in self._entries.items() if v.partition == partition]

    def drop_partition(self, partition: int) -> int:
        """Forget a revoked partition's entries; its new owner rebuilds them."""
        doomed = [k for k, v in self._entries.items() if v.partition == partition]
        for key in doomed:
            self.pop(key)
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
