"""A keyed state store with event-time eviction and change tracking.

Each key (a card or a merchant id) maps to one flat ``array('d')`` of fixed width. A flat
array of doubles is the most compact per-key state CPython offers (about 176 bytes for 12
numbers, against 400+ for a list of floats or a ``__slots__`` object of boxed floats), which
is what lets a partition hold a million cards in well under 500 bytes each.

Conventions the owner of the store keeps:

- slot 0 of every state array is the key's last-access event time; the owner writes it
  (``state[0] = max(state[0], t)``) and the store uses it to decide idleness;
- ``touch`` is called on every write, so the store's order is the order of last writes.

Eviction is O(evicted) amortised: the mapping is an ``OrderedDict`` kept in last-write order
(``move_to_end`` on every touch), so idle keys gather at the front and ``evict`` pops from
there until it meets a key that is still live; it never scans the live keys, and it remembers
when that front key can go idle, so a call before then costs one comparison. With events
slightly out of order the front key may be younger than one behind it; that key is then
evicted a little later (when the front one goes idle), never wrongly.

Changes are tracked for the state changelog: keys written since the last ``drain_changes``
and keys evicted since then (tombstones). The two sets are kept disjoint, so a writer that
emits the changed values and the tombstones never resurrects or deletes the wrong thing.

A store may draw on a ``ByteBudget`` (core/budget.py), shared with other stores: each key is
estimated at a fixed cost plus its length plus 8 bytes a float, added when the key is created
and removed when it goes. A new key that takes the budget over it evicts this store's least
recently written keys (tombstoned like idle ones, counted in ``budget.dropped``), never the
key being written.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from stream.core.budget import CARD_ENTRY_BYTES, ByteBudget

__all__ = ["StateStore"]


class StateStore:
    """Fixed-width per-key float state, ordered by last write, evicted after ``ttl_s`` idle.

    Parameters
    ----------
    width
        Number of floats per key (slot 0 is the last-access event time).
    ttl_s
        A key whose last access is more than ``ttl_s`` seconds of event time before ``now``
        is evicted by ``evict(now)``.
    track_changes
        Record written and evicted keys for ``drain_changes``. Turn off when nothing drains
        them, or the record of evicted keys grows without bound.
    budget
        A byte budget this store draws on (module docstring); None: unbounded in bytes.

    Examples
    --------
    >>> s = StateStore(width=2, ttl_s=10.0)
    >>> st = s.touch("a")
    >>> st[0] = 100.0
    >>> s.touch("b")[0] = 105.0
    >>> s.evict(now=112.0), len(s), "b" in s
    (1, 1, True)
    >>> s.drain_changes()
    ({'b': [105.0, 0.0]}, ['a'])
    >>> s.drain_changes()
    ({}, [])
    >>> budget = ByteBudget(limit=1000)  # a key of width 2 is estimated at 281 bytes
    >>> s = StateStore(width=2, ttl_s=10.0, budget=budget)
    >>> for key in "abcd":
    ...     s.touch(key)[0] = 1.0
    >>> len(s), "a" in s, budget.dropped, budget.used
    (3, False, 1, 843)
    """

    def __init__(self, width: int, ttl_s: float, *, track_changes: bool = True,
                 budget: ByteBudget | None = None) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not ttl_s > 0.0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        self.width = width
        self.ttl_s = ttl_s
        self.track_changes = track_changes
        self._template = array("d", [0.0] * width)
        self._data: OrderedDict[str, array[float]] = OrderedDict()
        self._changed: set[str] = set()
        self._evicted: set[str] = set()
        # No key can be idle before this event time (the front key's last access + ttl).
        self._next_check = -math.inf
        self.budget = budget
        self._entry_bytes = CARD_ENTRY_BYTES + 8 * width  # plus the key's length
        self.bytes = 0  # this store's share of the budget's estimate

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def peek(self, key: str) -> array[float] | None:
        """The key's state, or None; no side effects (order and change record untouched).

        The caller must not write to the returned array; use ``touch`` for writes.
        """
        return self._data.get(key)

    def touch(self, key: str, t: float = math.inf) -> array[float]:
        """The key's state for writing: created as zeros if absent, recorded as changed, and
        moved to the back of the eviction order when the write is at event time ``t`` past
        its slot 0 (the caller then advances slot 0 to ``t``).

        Why only then: the eviction order must be the order of slot 0, which is what a
        restore rebuilds it from. A write that leaves slot 0 alone (a card's fraud label,
        a late event) and still moved the key made the live store keep a key that the
        restored one evicts (``evict`` looks at the front key only).

        >>> s = StateStore(width=2, ttl_s=10.0)
        >>> s.touch("a", 100.0)[0] = 100.0
        >>> s.touch("b", 105.0)[0] = 105.0
        >>> _ = s.touch("a", 90.0)  # a late write: "a" keeps its place
        >>> list(s.export())
        ['a', 'b']
        """
        data = self._data
        st = data.get(key)
        if st is None:
            st = self._template[:]
            data[key] = st
            size = self._entry_bytes + len(key)
            self.bytes += size
            budget = self.budget
            if budget is not None and budget.add(size):
                self._over_budget(budget)
        elif t > st[0]:
            data.move_to_end(key)
        if self.track_changes:
            self._changed.add(key)
            if self._evicted:
                self._evicted.discard(key)
        return st

    def _over_budget(self, budget: ByteBudget) -> None:
        """Evict the least recently written keys until the budget holds (or only the key
        just written is left)."""
        data = self._data
        while budget.over and len(data) > 1:
            self._drop(next(iter(data)))
            budget.dropped += 1

    def _drop(self, key: str) -> None:
        del self._data[key]
        size = self._entry_bytes + len(key)
        self.bytes -= size
        if self.budget is not None:
            self.budget.remove(size)
        if self.track_changes:
            self._changed.discard(key)
            self._evicted.add(key)

    def evict(self, now: float) -> int:
        """Drop keys idle for more than ``ttl_s`` at event time ``now``; return how many.

        Remembers when the front key goes idle, so a call before then is one comparison:
        cheap enough to call on every event.
        """
        if now <= self._next_check:
            return 0
        data = self._data
        cutoff = now - self.ttl_s
        n = 0
        while data:
            key = next(iter(data))
            last = data[key][0]
            if not last < cutoff:
                self._next_check = last + self.ttl_s
                break
            self._drop(key)
            n += 1
        return n

    def drain_changes(self) -> tuple[dict[str, list[float]], list[str]]:
        """Keys written since the last drain (with their state as plain floats) and keys
        evicted since then; both records are then cleared."""
        data = self._data
        changed = {k: data[k].tolist() for k in self._changed if k in data}
        evicted = sorted(self._evicted)
        self._changed.clear()
        self._evicted.clear()
        return changed, evicted

    def export(self) -> dict[str, list[float]]:
        """Every key's state as plain floats, in eviction order (oldest write first)."""
        return {k: v.tolist() for k, v in self._data.items()}

    def restore(self, key: str, values: Sequence[float]) -> None:
        """Put one key's state back (from a snapshot or a changelog record).

        The key goes to the back of the eviction order and is not recorded as changed:
        it is already durable where it came from.
        """
        self._next_check = -math.inf  # the front may have changed
        if len(values) != self.width:
            raise ValueError(f"state for {key!r} has {len(values)} values, expected {self.width}")
        st = array("d", values)
        if not all(math.isfinite(v) for v in st):
            raise ValueError(f"state for {key!r} has a non-finite value")
        new = key not in self._data
        self._data[key] = st
        self._data.move_to_end(key)
        if new:
            size = self._entry_bytes + len(key)
            self.bytes += size
            if self.budget is not None and self.budget.add(size):
                self._over_budget(self.budget)

    def restore_all(self, items: Mapping[str, Sequence[float]]) -> None:
        """``restore`` many keys, keeping the given order as the eviction order."""
        for key, values in items.items():
            self.restore(key, values)

    def clear(self) -> None:
        """Forget every key and the change record (e.g. when a partition is revoked)."""
        if self.budget is not None:
            self.budget.remove(self.bytes)
        self.bytes = 0
        self._data.clear()
        self._next_check = -math.inf
        self._changed.clear()
        self._evicted.clear()
