"""Byte budgets for the stores that grow with the input: pending records, early labels, cards.

Counting entries is not enough: an entry's size depends on its ids, and a writer of long ids
could fill the memory with a count that looks harmless (1,000 labels with 700 KB transaction
ids took 700 MB). So each store estimates its bytes as it goes, from a fixed cost per entry
(measured with tracemalloc on CPython 3.11: the dict slot, the objects and their headers) plus
the lengths of its strings and arrays, and drops its oldest entries once over budget. The
estimate costs an addition per insert and per removal, never a walk over the objects
(`sys.getsizeof` per event would cost more than the model). Ids are counted one byte per
character: non-ASCII ids count low, and `max_field_length` bounds them anyway.
"""

from __future__ import annotations

# Fixed bytes per entry, besides the lengths of its ids (and 8 per float of its arrays).
PENDING_ENTRY_BYTES = 384  # dict slot, Decided, two str headers, the features' array header
EARLY_LABEL_ENTRY_BYTES = 192  # dict slot, str header, the (label, time) tuple and float
CARD_ENTRY_BYTES = 264  # dict slot, str header, array header, the changed-keys set slot


class ByteBudget:
    """Estimated bytes held against a limit, shared by the stores that draw on it (every
    assigned partition's card store draws on one), and how many entries it made them drop.

    >>> budget = ByteBudget(limit=1000)
    >>> budget.add(600), budget.add(600)
    (False, True)
    >>> budget.remove(600); budget.used, budget.over
    (600, False)
    """

    __slots__ = ("limit", "used", "dropped")

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"a byte budget must be positive, got {limit}")
        self.limit = limit
        self.used = 0
        self.dropped = 0

    def add(self, size: int) -> bool:
        """Count `size` more bytes; True when the budget is now exceeded."""
        self.used += size
        return self.used > self.limit

    def remove(self, size: int) -> None:
        self.used -= size

    @property
    def over(self) -> bool:
        return self.used > self.limit
