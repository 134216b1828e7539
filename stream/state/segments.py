"""Changelog segments: the two oldest-first memories written a checkpoint at a time.

Why: the memory of recent decisions (duplicates) and of learned labels (corrections) got one
changelog record per transaction each, two of the ~3.7 records a labelled event cost at every
checkpoint and 570 of its ~930 bytes; every record is a produce call, a delivery report and
broker work. Both memories forget strictly oldest first (`RecentIds`: a size bound and an
event-time window, both popping from the front), so what a memory holds is "every row it
wrote whose sequence number is at or past its oldest remembered one". A checkpoint therefore
writes a memory's new and changed rows as a few segment records (`D:<writer>:<n>` for recent
decisions, `L:<writer>:<n>` for learned labels; each value a JSON object id -> row, at most
SEGMENT_BYTES), then the memory's front (`D` / `L`: the sequence number of its oldest row),
then a tombstone for each segment whose rows are all behind the front, oldest first.

A restore (`remembered`) folds the segments in offset order (a later row of an id wins: a
correction rewrites its label with the id's sequence number), adds the per-id rows of
changelogs written before segments (`d:` / `l:`), and keeps the rows at or past the front;
the per-id rows are all deleted at the next checkpoint, which writes those still remembered
into a segment (the migration).
Compaction keeps the latest front and every segment not yet deleted; those alive hold the
memory's window of rows plus at most a checkpoint's worth. `<writer>` is random per process,
so two processes (a zombie at-least-once instance beside its successor) never overwrite each
other's segments.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable, Mapping

import orjson

from stream.state.changelog import RecentRow

# Below the smallest `max_message_bytes` allowed (100,000), with room for the key, the
# headers and the record overhead.
SEGMENT_BYTES = 90_000


class SegmentWriter:
    """The write side of one memory's segments: names them, and knows which are alive.

    >>> w = SegmentWriter(b"D:", b"D", token="w1")
    >>> w.write({"t1": [1, 10.0], "t2": [2, 11.0]}, front=1)
    [(b'D:w1:0', b'{"t1":[1,10.0],"t2":[2,11.0]}'), (b'D', b'1')]
    >>> w.write({"t3": [3, 12.0]}, front=3)  # t1 and t2 forgotten: their segment goes
    [(b'D:w1:1', b'{"t3":[3,12.0]}'), (b'D', b'3'), (b'D:w1:0', None)]
    """

    def __init__(self, prefix: bytes, front_key: bytes, token: str | None = None) -> None:
        self.prefix = prefix
        self.front_key = front_key
        self.token = (token or uuid.uuid4().hex[:8]).encode()
        self._n = 0
        # (key, highest sequence number in it), in the order written (restored ones first).
        self._alive: deque[tuple[bytes, int]] = deque()

    def adopt(self, alive: Iterable[tuple[bytes, int]]) -> None:
        """The segments a restore found, in offset order: deleted when their rows go."""
        self._alive = deque(alive)

    @property
    def alive(self) -> int:
        return len(self._alive)

    def write(self, rows: Mapping[str, RecentRow], front: int) -> list[tuple[bytes, bytes | None]]:
        """Records for the rows changed since the last checkpoint and the memory's front."""
        out: list[tuple[bytes, bytes | None]] = []
        for chunk, value in _encoded(dict(rows)):
            key = b"%s%s:%d" % (self.prefix, self.token, self._n)
            self._n += 1
            out.append((key, value))
            self._alive.append((key, max(int(row[0]) for row in chunk.values())))
        out.append((self.front_key, orjson.dumps(front)))
        alive = self._alive
        while alive and alive[0][1] < front:
            out.append((alive.popleft()[0], None))
        return out


def _encoded(rows: dict[str, RecentRow]) -> list[tuple[dict[str, RecentRow], bytes]]:
    """The rows as JSON objects of at most SEGMENT_BYTES each (a single row is at most a few
    kilobytes: its ids are bounded by `max_field_length`).

    Why not one `orjson.dumps` of the lot, halved until it fits: a checkpoint of a busy
    scorer holds hundreds of learned rows (~550 bytes each: the decision-time features), so
    the halving encoded every row three times, and that was the largest part of a
    checkpoint's cost in the profile. A memory's rows are much alike in size, so the first
    row says whether the lot fits; if not, each row is encoded once and the pieces are packed
    into objects in order, byte-for-byte what `orjson.dumps` gives each chunk.

    >>> rows = {f"t{i}": [i, 0.5] * 4000 for i in range(8)}
    >>> chunks = _encoded(rows)
    >>> [len(chunk) for chunk, value in chunks], all(len(v) <= SEGMENT_BYTES for _, v in chunks)
    ([3, 3, 2], True)
    >>> all(orjson.loads(value) == chunk for chunk, value in chunks)
    True
    >>> _encoded({"t1": [1, 10.0]})
    [({'t1': [1, 10.0]}, b'{"t1":[1,10.0]}')]
    """
    if not rows:
        return []
    key, row = next(iter(rows.items()))
    if len(rows) * (len(orjson.dumps(key)) + len(orjson.dumps(row)) + 2) <= SEGMENT_BYTES:
        value = orjson.dumps(rows)
        if len(value) <= SEGMENT_BYTES:
            return [(rows, value)]
    return _packed(rows)


def _packed(rows: dict[str, RecentRow]) -> list[tuple[dict[str, RecentRow], bytes]]:
    """Each row encoded once, as `"id":row`, and packed in order into JSON objects of at most
    SEGMENT_BYTES (a row alone larger than that is a chunk of its own)."""
    dumps = orjson.dumps
    out: list[tuple[dict[str, RecentRow], bytes]] = []
    chunk: dict[str, RecentRow] = {}
    parts: list[bytes] = []
    size = 2  # the braces
    for key, row in rows.items():
        part = dumps(key) + b":" + dumps(row)
        if parts and size + 1 + len(part) > SEGMENT_BYTES:
            out.append((chunk, b"{" + b",".join(parts) + b"}"))
            chunk, parts, size = {}, [], 2
        size += len(part) + (1 if parts else 0)
        chunk[key] = row
        parts.append(part)
    out.append((chunk, b"{" + b",".join(parts) + b"}"))
    return out


def remembered(legacy: Mapping[str, RecentRow], segments: Mapping[bytes, Mapping[str, RecentRow]],
               front: int | None) -> tuple[dict[str, RecentRow], list[tuple[bytes, int]],
                                           list[str]]:
    """A memory as restored: (rows by id, the segments alive with their highest sequence
    number, the legacy ids still remembered, to move into a segment). `segments` in offset
    order.

    >>> rows, alive, moved = remembered(
    ...     {"old": [0, 1.0], "kept": [2, 2.0]},
    ...     {b"D:a:0": {"t1": [1, 3.0], "t3": [3, 4.0]}, b"D:a:1": {"t1": [1, 5.0]}}, front=2)
    >>> rows, alive, moved
    ({'kept': [2, 2.0], 't3': [3, 4.0]}, [(b'D:a:0', 3), (b'D:a:1', 1)], ['kept'])
    """
    rows: dict[str, RecentRow] = dict(legacy)
    alive: list[tuple[bytes, int]] = []
    for key, segment in segments.items():
        rows.update(segment)
        if segment:
            alive.append((key, max(int(row[0]) for row in segment.values())))
    if front is not None:
        rows = {k: row for k, row in rows.items() if int(row[0]) >= front}
    return rows, alive, [tx_id for tx_id in legacy if tx_id in rows]
