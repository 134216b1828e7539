"""Which partition a keyed record lands in, and the order a consumer group sees a stream in.

Kafka's Java client (and kafka-python, and librdkafka with `partitioner=murmur2_random`)
puts a keyed record in partition `(murmur2(key) & 0x7fffffff) % partitions`. Transactions and
labels are keyed by card, so a card's events and labels share a partition number. Replaying a
stream in process "as P partitions" therefore means: split it by this hash, keep each
partition's records in produce order, and release them in the event-time order the live
scorer's intake uses (stream/serving/intake.py: transactions before labels at equal times, then by
partition). `consumed_order` does exactly that, so an in-process run and `stream run` over the
same records agree to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from stream.contracts.messages import Label, Transaction
from stream.core.ordering import TimeAligner

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), unsigned 32-bit.

    >>> [murmur2(s.encode()) - (1 << 32) for s in ("21", "foobar")]  # Java's signed values
    [-973932308, -790332482]
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    full = length - length % 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length - full
    if rest >= 3:
        h ^= data[full + 2] << 16
    if rest >= 2:
        h ^= data[full + 1] << 8
    if rest >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the default (murmur2) partitioner picks for `key`.

    >>> partition_for(b"card-000001", 4), partition_for(b"card-000001", 1)
    (3, 0)
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


Item = Transaction | Label


def _time(entry: tuple[int, Any]) -> float:
    item = entry[1]
    return item.timestamp if isinstance(item, Transaction | Label) else -math.inf


def consumed_order(items: Iterable[Item], partitions: int) -> Iterator[tuple[int, Item]]:
    """`(partition, item)` in the order one scorer owning all `partitions` processes them.

    `items` are in produce order (transactions and labels interleaved, as one producer sent
    them). Each is routed by its card id, as both topics are keyed.

    >>> t = Transaction("t1", "card-000001", "m", 1.0, 10.0)
    >>> lab = Label("t0", "card-000002", False, 5.0)
    >>> [(p, type(i).__name__) for p, i in consumed_order([t, lab], 4)]
    [(2, 'Label'), (3, 'Transaction')]
    """
    sources: dict[tuple[int, int], list[tuple[int, Item]]] = {}
    for item in items:
        partition = partition_for(item.card_id.encode(), partitions)
        kind = 0 if isinstance(item, Transaction) else 1
        sources.setdefault((kind, partition), []).append((partition, item))
    aligner: TimeAligner[tuple[int, Item]] = TimeAligner(_time, max_wait_s=0.0,
                                                         max_buffered=2**62)
    aligner.track(sources)
    for source, records in sources.items():
        aligner.add(source, records)
    yield from aligner.drain()
