from __future__ import annotations

from array import array

from stream.core.scoring.pending import Decided, DueLabels, PendingBuffer


def _decided(ts: float, partition: int = 0) -> Decided:
    return Decided(partition, "m", ts, 0.5, array("d", [1.0]))


def test_size_bound_drops_the_oldest() -> None:
    buf = PendingBuffer(max_size=3, ttl_s=1e9)
    for i in range(5):
        buf.put(f"t{i}", _decided(float(i)))
    assert len(buf) == 3 and buf.dropped_full == 2
    assert buf.pop("t1") is None and buf.pop("t4") is not None


def test_ttl_in_event_time() -> None:
    buf = PendingBuffer(max_size=100, ttl_s=10.0)
    for i in range(20):
        buf.put(f"t{i}", _decided(float(i)))
    expired = buf.expire(now=19.0)
    assert [k for k, _ in expired] == [f"t{i}" for i in range(9)]
    assert len(buf) == 11 and buf.expired == 9


def test_drop_partition_only_touches_that_partition() -> None:
    buf = PendingBuffer(max_size=100, ttl_s=1e9)
    for i in range(10):
        buf.put(f"t{i}", _decided(float(i), partition=i % 2))
    assert buf.drop_partition(1) == 5
    assert all(buf.pop(f"t{i}") is not None for i in range(0, 10, 2))


def test_due_labels_release_in_due_order() -> None:
    due = DueLabels(delay_s=100.0)
    due.push("late", True, 50.0)
    due.push("early", False, 10.0)
    assert due.release(109.0) == []
    assert due.release(110.0) == [("early", False)]
    assert due.release(1000.0) == [("late", True)] and len(due) == 0
