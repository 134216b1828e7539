"""StateStore: event-time eviction in last-write order, change tracking, restore."""

from __future__ import annotations

import orjson
import pytest

from stream.core.features.store import StateStore


def _write(store: StateStore, key: str, t: float, value: float = 0.0) -> None:
    st = store.touch(key)
    st[0] = max(st[0], t)
    st[1] = value


def test_touch_creates_zeros_and_peek_has_no_side_effects() -> None:
    s = StateStore(width=3, ttl_s=10.0)
    assert s.peek("a") is None
    assert "a" not in s
    assert list(s.touch("a")) == [0.0, 0.0, 0.0]
    s.drain_changes()
    assert s.peek("a") is not None
    assert s.drain_changes() == ({}, [])


def test_evict_pops_idle_keys_in_last_write_order() -> None:
    s = StateStore(width=2, ttl_s=100.0)
    for i, key in enumerate("abcde"):
        _write(s, key, float(i * 10))  # a@0 b@10 c@20 d@30 e@40
    _write(s, "a", 45.0)  # a is written again: now the youngest
    assert s.evict(now=100.0) == 0  # nothing idle for more than 100 s
    assert s.evict(now=125.0) == 2  # b (10) and c (20)
    assert "b" not in s and "c" not in s and "a" in s
    assert s.evict(now=1000.0) == 3
    assert len(s) == 0
    assert s.evict(now=2000.0) == 0


def test_evict_stops_at_the_first_live_key() -> None:
    """Only the idle prefix is examined: a live key at the front shields the rest (late
    events), which are then evicted once the front one is idle too."""
    s = StateStore(width=2, ttl_s=10.0)
    _write(s, "late_but_young", 100.0)
    _write(s, "old", 50.0)  # written after, with an older event time
    assert s.evict(now=105.0) == 0
    assert s.evict(now=111.0) == 2


def test_evict_after_the_front_key_is_written_again() -> None:
    s = StateStore(width=2, ttl_s=100.0)
    _write(s, "a", 0.0)
    _write(s, "b", 50.0)
    assert s.evict(now=60.0) == 0  # a can go idle at 100 at the earliest
    _write(s, "a", 200.0)  # a moves to the back; b is now the front
    assert s.evict(now=99.0) == 0
    assert s.evict(now=151.0) == 1 and "b" not in s and "a" in s
    assert s.evict(now=300.0) == 0
    assert s.evict(now=300.5) == 1
    s.restore("c", [10.0, 0.0])  # restore resets the remembered check time
    assert s.evict(now=111.0) == 1


def test_drain_changes_reports_changed_and_evicted_disjointly() -> None:
    s = StateStore(width=2, ttl_s=10.0)
    _write(s, "a", 0.0, 1.0)
    _write(s, "b", 5.0, 2.0)
    assert s.drain_changes() == ({"a": [0.0, 1.0], "b": [5.0, 2.0]}, [])
    _write(s, "b", 8.0, 3.0)
    assert s.evict(now=12.0) == 1  # a
    changed, evicted = s.drain_changes()
    assert changed == {"b": [8.0, 3.0]} and evicted == ["a"]
    _write(s, "c", 30.0)
    assert s.evict(now=30.0) == 1  # b, changed earlier in this interval: a tombstone only
    _write(s, "b", 31.0, 9.0)  # b comes back: a value, no tombstone
    changed, evicted = s.drain_changes()
    assert changed == {"c": [30.0, 0.0], "b": [31.0, 9.0]}
    assert evicted == []
    orjson.dumps(changed)  # plain data


def test_track_changes_off_records_nothing() -> None:
    s = StateStore(width=2, ttl_s=1.0, track_changes=False)
    for i in range(100):
        _write(s, f"k{i}", float(i))
        s.evict(float(i))
    assert s.drain_changes() == ({}, [])


def test_export_restore_round_trip_keeps_order() -> None:
    s = StateStore(width=2, ttl_s=10.0)
    for key, t in (("x", 3.0), ("y", 1.0), ("z", 2.0)):
        _write(s, key, t, t * 2)
    exported = orjson.loads(orjson.dumps(s.export()))
    r = StateStore(width=2, ttl_s=10.0)
    r.restore_all(exported)
    assert r.export() == s.export()
    assert list(r.export()) == ["x", "y", "z"]
    assert r.drain_changes() == ({}, [])  # restored state is already durable
    assert r.evict(now=12.5) == s.evict(now=12.5) == 0  # x, at the front, is live: shields y, z
    assert r.evict(now=13.5) == s.evict(now=13.5) == 3


def test_restore_validates() -> None:
    s = StateStore(width=2, ttl_s=10.0)
    with pytest.raises(ValueError):
        s.restore("a", [1.0])
    with pytest.raises(ValueError):
        s.restore("a", [1.0, float("nan")])
    with pytest.raises(ValueError):
        StateStore(width=0, ttl_s=1.0)
    with pytest.raises(ValueError):
        StateStore(width=1, ttl_s=0.0)


def test_memory_bounded_under_churn() -> None:
    s = StateStore(width=4, ttl_s=1000.0)
    for i in range(100_000):
        t = i * 1.0
        _write(s, f"k{i}", t)
        s.evict(t)
        assert len(s) <= 1001
    changed, evicted = s.drain_changes()
    assert len(changed) == len(s) and len(evicted) == 100_000 - len(s)
