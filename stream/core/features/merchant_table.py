"""One merchant table over every partition's traffic, read as of event time.

Why: partitions are keyed by card, so a merchant's transactions and labels are spread over
all of them; a merchant state kept per partition sees 1/P of its traffic, and detection falls
as the deployment scales out. This table folds the merchant events of *every* partition
(transactions and delivered labels) into one state per merchant, and answers "what did
merchant m look like at event time c" the same way however the partitions are spread over
instances, because what it answers depends only on the events, never on arrival order.

The rules (see docs/architecture.md, "Merchant state"):

- Each partition task emits merchant events with an *effective time*
  ``eff = max(event time, floor)``, where ``floor = stream time - lateness``: input later than
  the allowed lateness counts as arriving at the floor.
- A partition's *watermark* promises that none of its future events has ``eff`` below it.
- The table folds events in the canonical order ``(eff, partition, seq)`` up to the
  *frontier*, the smallest watermark over all partitions; later events wait in a heap.
- A transaction at ``t`` reads its merchant as of ``cutoff = eff - delta``: exactly the events
  with ``eff < cutoff``. ``delta >= lateness`` makes that cutoff at or behind every partition's
  watermark when partitions keep pace, so the read is exact; a read past the frontier (a
  partition lagging) is served from what is folded and counted as ``stale``.
- Reads behind the frontier are exact too: folding an event first keeps a copy of the
  merchant's state before it, for as long as a reader can still ask for a cutoff before it
  (``release``).

Memory is O(1) per merchant (``merchant.WIDTH`` floats) plus the copies inside the reader
horizon, and idle merchants are evicted after ``ttl_s`` of event time. The copies are flat
``array("d")`` rows, not objects (``_Copies``): about 130 bytes each instead of 390-450, since
there is one for every event folded within ``delta_s`` of the readers.

>>> table = MerchantTable(partitions=2, prior=(1.0, 99.0), delta_s=60.0)
>>> table.add(0, seq=1, eff=100.0, merchant="m1", kind=TX, value=10.0)
>>> table.add(1, seq=1, eff=130.0, merchant="m1", kind=LABEL, value=1.0)
>>> table.watermark(0, 200.0); table.watermark(1, 150.0)
>>> table.frontier
150.0
>>> out: dict[str, float] = {}
>>> table.read("m1", cutoff=120.0, t=180.0, out=out)  # the label (eff 130) is not yet in
True
>>> out["merchant_labelled_log"], round(out["merchant_count_1d"], 4)
(0.0, 0.9991)
>>> table.read("m1", cutoff=140.0, t=200.0, out=out), round(out["merchant_risk"], 4)
(True, 0.0198)
>>> table.read("m1", cutoff=160.0, t=220.0, out=out)  # past the frontier: stale
False
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stream.core.features import merchant as merchant_state
from stream.errors import FraudStreamError

if TYPE_CHECKING:
    from stream.core.scoring.timeline import ModelTimeline

__all__ = ["LABEL", "LEARN", "TX", "FeedEvent", "ImageMismatch", "MerchantRows", "MerchantTable",
           "TableImage", "TableView"]

TX = 0
LABEL = 1
LEARN = 2
"""A labelled example for the shared champion (scoring/timeline.py): no merchant, and the
value ``array("d", [label, *decision-time features])``.

Why an array: examples wait in the fold's heap until every partition's watermark passes
them, and during a rebuild from the merchant feed that can be most of the feed at once (a
reader that delivers the feed partition by partition). As a tuple of floats an example of 31
features took about 1,060 bytes in 33 objects; as an array, 336 in one."""
Value = float | array  # array("d"): an example
_NEVER = math.inf
_WIDTH = merchant_state.WIDTH


class _Copies:
    """One merchant's state copies, oldest first: ``effs[i]`` is the effective time of a
    folded event and ``rows[i * WIDTH:(i + 1) * WIDTH]`` the state just before it.

    Why flat arrays: a copy is kept for every event folded within the readers' horizon
    (``delta_s`` of event time, 600,000 events at 2,000 a second with the default 300 s), and
    as an ``(eff, array)`` tuple in a list, with its ``(eff, merchant)`` entry in the fold
    order, one cost about 420 bytes in five objects; here it is 14 floats and one list slot
    (``_FoldOrder``), with nothing for the collector to track.

    >>> c = _Copies(array("d", [10.0]), array("d", [1.0] * _WIDTH))
    >>> c.add(20.0, array("d", [2.0] * _WIDTH)); len(c), c.at(15.0)[0], c.at(5.0)[0]
    (2, 2.0, 1.0)
    >>> c.drop_before(15.0); len(c), c.effs[0]
    (1, 20.0)
    """

    __slots__ = ("effs", "rows")

    def __init__(self, effs: array[float], rows: array[float]) -> None:
        self.effs = effs
        self.rows = rows

    def __len__(self) -> int:
        return len(self.effs)

    def add(self, eff: float, row: array[float]) -> None:
        self.effs.append(eff)
        self.rows.extend(row)

    def at(self, cutoff: float) -> array[float]:
        """The state before the first event at or after ``cutoff`` (at most the last's)."""
        i = bisect_left(self.effs, cutoff) * _WIDTH
        return self.rows[i:i + _WIDTH]

    def drop_before(self, horizon: float) -> None:
        k = bisect_left(self.effs, horizon)
        del self.effs[:k]
        del self.rows[:k * _WIDTH]


class _FoldOrder:
    """``(eff, merchant)`` of every copy, in fold order (which is eff order), as an array of
    floats and a list of names read from ``start`` on; the consumed front is cut off once it
    is more than half of them (amortised O(1) a copy, no tuple per copy).

    >>> order = _FoldOrder(); order.add(1.0, "m1"); order.add(2.0, "m2")
    >>> order.take_before(1.5), order.take_before(1.5), len(order)
    ('m1', None, 1)
    """

    __slots__ = ("effs", "merchants", "start")

    def __init__(self) -> None:
        self.effs: array[float] = array("d")
        self.merchants: list[str] = []
        self.start = 0

    def __len__(self) -> int:
        return len(self.effs) - self.start

    def add(self, eff: float, merchant: str) -> None:
        self.effs.append(eff)
        self.merchants.append(merchant)

    def take_before(self, horizon: float) -> str | None:
        """The merchant of the oldest entry if it is before ``horizon`` (and drop it)."""
        i = self.start
        if i == len(self.effs) or self.effs[i] >= horizon:
            if i > 1024 and 2 * i > len(self.effs):
                del self.effs[:i]
                del self.merchants[:i]
                self.start = 0
            return None
        self.start = i + 1
        return self.merchants[i]

    def clear(self) -> None:
        del self.effs[:]
        self.merchants.clear()
        self.start = 0


class ImageMismatch(FraudStreamError, ValueError):
    """A table image folded under other parameters than this table's (partition count,
    prior, TTL, lateness, the shared champion's form): loading it would not give the state a
    fold of the feed gives, so it is refused and the caller folds the feed. Another
    ``delta_s`` is not one: it only moves which copies are kept (``load``)."""


@dataclass(slots=True)
class MerchantRows:
    """Every merchant's folded state in an image: the names in the table's order, and their
    rows end to end in one ``array('d')``; iterated, ``(name, [floats])`` pairs, the form
    images listed them in before 2026-12-04.

    Why: pickling a million merchants as ``(name, [13 floats])`` tuples, and checking and
    loading them back, took 4.3 s and 6.4 s; one array pickles as its bytes.

    >>> rows = MerchantRows(["m1", "m2"], array("d", [1.0, 2.0, 3.0, 4.0]))
    >>> len(rows), list(rows)[1], rows.width
    (2, ('m2', [3.0, 4.0]), 2)
    """

    names: list[str]
    rows: array[float]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def width(self) -> int:
        return len(self.rows) // len(self.names) if self.names else 0

    def __iter__(self) -> Iterator[tuple[str, list[float]]]:
        width, rows = self.width, self.rows
        for i, name in enumerate(self.names):
            yield name, rows[i * width:(i + 1) * width].tolist()


@dataclass(slots=True)
class TableImage:
    """The shared merchant table at one point of its fold, as plain data (and, with the
    shared champion, its learner): what a fold of the merchant feed up to that point gives.

    Why: a rebuild otherwise folds the whole feed again, and with the shared champion
    relearns every label in it (about 16 CPU hours for 90 days at 100 labels a second). An
    image, taken when every owned partition's news is published, lets a rebuild load it and
    fold only the feed records after it: ``views`` says, per partition, the last sequence
    number folded (a feed record's events up to it are skipped) and the stream time.
    ``marks`` are the partitions' watermarks as published, ``queued`` the events not yet
    folded, ``copies`` the states kept for reads behind the frontier from ``horizon`` on:
    ``(merchant, effs, rows)``, two ``array('d')`` as the table keeps them (``_Copies``).

    ``merchants`` is a ``MerchantRows`` (before 2026-12-04, a list of ``(name, [floats])``).
    Why arrays: at the default 300 s behind and 2,000 events a second an image holds about
    600,000 copies; as ``(eff, [floats])`` tuples, taking and encoding one stalled the loop
    for 2.5 s and wrote 78 MiB, as arrays it is a copy of their bytes (README "State and
    delivery").
    Images written before 2026-12-04 list them as ``(merchant, [(eff, [floats]), ...])``;
    ``load`` reads both.
    """

    partitions: int
    params: dict[str, Any]
    frontier: float
    horizon: float
    folded: int
    marks: list[float]
    merchants: MerchantRows | list[tuple[str, list[float]]]
    copies: list[tuple[Any, ...]]  # (merchant, effs, rows); older: (merchant, [(eff, state)])
    queued: list[tuple[float, int, int, int, str, Any]]
    views: dict[int, tuple[int, float]] = field(default_factory=dict)
    lateness_s: float = 0.0  # the views' allowed lateness (the pipeline's setting)
    timeline: Any = None  # scoring/timeline.py's TimelineImage, or None


class MerchantTable:
    """Merchant events from ``partitions`` partitions, folded in event-time order.

    Parameters
    ----------
    partitions
        How many input partitions feed the table; the frontier waits for each of them.
    prior
        Beta prior ``(a, b)`` of the merchant fraud rates (see ``merchant.py``).
    delta_s
        Reads lag the transaction by this much event time (documentation; the caller passes
        the cutoff).
    ttl_s
        A merchant idle this long in event time is forgotten.
    """

    def __init__(self, partitions: int, prior: tuple[float, float] = (1.0, 99.0),
                 delta_s: float = 300.0, ttl_s: float = 90 * 86400.0) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self.prior = prior
        self.delta_s = float(delta_s)
        self.ttl_s = float(ttl_s)
        self._marks = [-_NEVER] * partitions
        self._frontier = -_NEVER
        # The partitions this process runs (all of them in process; the owned ones when
        # instances share the table through the feed), and their common floor (``floor``).
        self._local = set(range(partitions))
        self._floor = -_NEVER
        # Whether the local partitions' records are being processed in event-time order (the
        # caller clears it for records released without that guarantee): the floor needs it.
        self.ordered = True
        self._local_min = -_NEVER
        self._remote_min = _NEVER
        self._heap: list[tuple[float, int, int, int, str, Value]] = []
        # The shared champion, fed the LEARN events in the same fold order (None: the model
        # stays per partition).
        self.timeline: ModelTimeline | None = None
        # Current state (as of the frontier), in last-write order for eviction.
        self._state: OrderedDict[str, array[float]] = OrderedDict()
        # Per merchant: (eff of a folded event, copy of the state just before it), oldest
        # first; kept while a reader may still ask for a cutoff at or before that eff.
        self._before: dict[str, _Copies] = {}
        # (eff, merchant) of every copy, in fold order (which is eff order): a release drops
        # what went below its horizon without scanning every merchant that keeps copies.
        self._kept = _FoldOrder()
        self._horizon = -_NEVER
        self._zero = array("d", [0.0] * merchant_state.WIDTH)
        self.stale_reads = 0
        self.folded = 0

    # -- writers ---------------------------------------------------------------------------
    def add(self, partition: int, seq: int, eff: float, merchant: str, kind: int,
            value: Value) -> None:
        """Queue one merchant event; it is folded once every partition's watermark passes it."""
        heapq.heappush(self._heap, (eff, partition, seq, kind, merchant, value))

    def watermark(self, partition: int, mark: float) -> None:
        """Partition ``partition`` will emit no event with ``eff < mark`` (never goes back)."""
        marks = self._marks
        old = marks[partition]
        if mark > old:
            marks[partition] = mark
            if partition in self._local:
                if old == self._local_min:
                    self._local_min = min(marks[p] for p in self._local)
                    self._refresh()
            elif old == self._remote_min:
                self._remote_min = min((marks[p] for p in range(self.partitions)
                                        if p not in self._local), default=_NEVER)
                self._refresh()

    def floor(self, mark: float) -> None:
        """Every local partition will emit no event with ``eff < mark``.

        Why: the live intake and the in-process replays process the local partitions'
        records in event-time order, so when one record at ``t`` is processed every local
        partition's next record is at ``t`` or later, and (effective times never being more
        than the lateness behind their partition's stream time) none of its events can have
        an effective time before ``t - lateness``. One call covers every local partition,
        idle ones included, without knowing their next records. Ignored while ``ordered`` is
        False (records released after giving up waiting for a partition)."""
        if mark > self._floor and self.ordered:
            self._floor = mark
            if self._local_min < mark:
                self._refresh()

    def set_local(self, partitions: set[int]) -> None:
        """The partitions this process runs now (after a rebalance); a partition that goes
        keeps the floor it had as its watermark until the feed brings a later one."""
        marks, floor = self._marks, self._floor
        for p in self._local - partitions:
            if marks[p] < floor:
                marks[p] = floor
        self._local = set(partitions)
        self._local_min = min((marks[p] for p in self._local), default=_NEVER)
        self._remote_min = min((marks[p] for p in range(self.partitions)
                                if p not in self._local), default=_NEVER)
        self._refresh()

    def effective_mark(self, partition: int) -> float:
        """The partition's watermark, the local floor included (what the feed publishes)."""
        mark = self._marks[partition]
        if partition in self._local and self._floor > mark:
            return self._floor
        return mark

    def remote_frontier(self) -> float:
        """The lowest watermark of the partitions other processes run (inf: none)."""
        return self._remote_min

    def _refresh(self) -> None:
        local = self._local_min if self._local_min > self._floor else self._floor
        if not self._local:
            local = _NEVER
        remote = self._remote_min
        self._advance(local if local < remote else remote)

    @property
    def frontier(self) -> float:
        return self._frontier

    @property
    def waiting(self) -> int:
        """Events queued behind the frontier."""
        return len(self._heap)

    def _advance(self, frontier: float) -> None:
        if frontier <= self._frontier:
            return
        self._frontier = frontier
        heap, state, before, kept = self._heap, self._state, self._before, self._kept
        keep_copies, ttl = self._horizon, self.ttl_s
        timeline = self.timeline
        while heap and heap[0][0] < frontier:
            eff, _, _, kind, merchant, value = heapq.heappop(heap)
            if kind == LEARN:
                if timeline is not None and type(value) is array:
                    timeline.learn(eff, value)
                continue
            m = state.get(merchant)
            if m is None:
                m = state[merchant] = array("d", self._zero)
            else:
                state.move_to_end(merchant)
            expired = m[0] < eff - ttl and m[0] != 0.0
            if eff >= keep_copies:
                copies = before.get(merchant)
                if copies is None:
                    before[merchant] = _Copies(array("d", (eff,)), array("d", m))
                else:
                    copies.add(eff, m)
                kept.add(eff, merchant)
            if expired:  # idle past the TTL: starts over, as if it had been evicted
                m[:] = self._zero
            if kind == TX:
                merchant_state.add_transaction(m, eff)
            else:
                merchant_state.add_label(m, value != 0.0, eff)
            self.folded += 1

    # -- readers ---------------------------------------------------------------------------
    def read(self, merchant: str, cutoff: float, t: float, out: dict[str, float]) -> bool:
        """The merchant's features from its events with ``eff < cutoff``, decayed to ``t``.

        Returns False when ``cutoff`` is past the frontier: some partition has not yet
        promised it is done with that time, so the answer may still change (counted); and
        when it is before the horizon, whose copies are gone (never, but for the first
        reads after loading an image taken under a shorter ``delta_s``: ``load``).
        """
        m = self._state.get(merchant)
        copies = self._before.get(merchant)
        if copies is not None and cutoff <= copies.effs[-1]:
            # The state before the first event at or after the cutoff; copies are in fold
            # (effective-time) order, and a busy merchant keeps hundreds between releases.
            m = copies.at(cutoff)
        if m is None or m[0] < cutoff - self.ttl_s:  # idle past the TTL: unknown again
            m = self._zero
        merchant_state.features(m, t, self.prior, out)
        if cutoff > self._frontier or cutoff < self._horizon:
            self.stale_reads += 1
            return False
        return True

    def release(self, horizon: float) -> None:
        """No reader will ask for a cutoff before ``horizon`` any more: drop older copies.

        O(copies dropped), through the copies' fold order: a scan of every merchant that
        keeps copies cost 2-3 ms a call on the bench's traffic, and so the pipeline called
        it rarely and dropped 10,000 events' copies at once (a 50-80 ms stall).

        >>> table = MerchantTable(partitions=1)
        >>> for eff in (100.0, 110.0, 120.0):
        ...     table.add(0, int(eff), eff, "m1", TX, 0.0)
        >>> table.watermark(0, 200.0); table.copies
        3
        >>> table.release(115.0); table.copies, table.release(500.0), table.copies
        (1, None, 0)
        """
        if horizon <= self._horizon:
            return
        self._horizon = horizon
        if self.timeline is not None:
            self.timeline.release(horizon)
        before, take = self._before, self._kept.take_before
        while (merchant := take(horizon)) is not None:
            copies = before.get(merchant)
            if copies is None or copies.effs[0] >= horizon:
                continue  # evicted since, or already cut by an earlier copy of this merchant
            if copies.effs[-1] < horizon:
                del before[merchant]
            else:
                copies.drop_before(horizon)

    def evict(self, now: float) -> int:
        """Forget merchants idle since ``now - ttl_s`` (slot 0 is each one's last event).

        Only memory: a merchant idle for the TTL already reads as unknown (``read``) and
        starts over on its next event (``_advance``), judged by the event times alone, so
        when eviction runs changes no score. Pass a ``now`` no later than the earliest
        cutoff any reader can still ask for (``release``'s horizon)."""
        state, limit, evicted = self._state, now - self.ttl_s, 0
        while state:
            merchant, m = next(iter(state.items()))
            if m[0] >= limit:
                break
            del state[merchant]
            self._before.pop(merchant, None)
            evicted += 1
        return evicted

    def reset(self) -> None:
        """Forget everything (a rebuild from the merchant feed follows)."""
        self._marks = [-_NEVER] * self.partitions
        self._frontier = -_NEVER
        self._floor = -_NEVER
        self._local_min = -_NEVER if self._local else _NEVER
        self._remote_min = -_NEVER if len(self._local) < self.partitions else _NEVER
        self._heap.clear()
        self._state.clear()
        self._before.clear()
        self._kept.clear()
        self._horizon = -_NEVER
        self.folded = 0
        if self.timeline is not None:
            self.timeline.reset()

    def mark_of(self, partition: int) -> float:
        """The partition's watermark (without the local floor)."""
        return self._marks[partition]

    def __len__(self) -> int:
        return len(self._state)

    @property
    def copies(self) -> int:
        """State copies kept for reads behind the frontier (memory watch)."""
        return sum(len(c) for c in self._before.values())

    # -- images (a rebuild that need not fold the whole feed) -------------------------------
    def params(self) -> dict[str, Any]:
        """What a fold depends on besides the events: an image folded under other values is
        not this table's (``load`` refuses it)."""
        return {"partitions": self.partitions, "prior": list(self.prior),
                "delta_s": self.delta_s, "ttl_s": self.ttl_s}

    def image(self) -> TableImage:
        """A copy of the fold as it stands (``TableImage``); the caller adds the views.

        >>> table = MerchantTable(partitions=1)
        >>> table.add(0, 1, 100.0, "m1", TX, 0.0); table.watermark(0, 150.0)
        >>> image = table.image()
        >>> image.frontier, [m for m, _ in image.merchants], image.queued
        (150.0, ['m1'], [])
        """
        return TableImage(
            partitions=self.partitions, params=self.params(), frontier=self._frontier,
            horizon=self._horizon, folded=self.folded,
            marks=[self.effective_mark(p) for p in range(self.partitions)],
            merchants=self._rows(),
            copies=[(m, array("d", kept.effs), array("d", kept.rows))
                    for m, kept in self._before.items()],
            # Examples as tuples of floats: the image's format from before they were arrays.
            queued=[(e, p, s, k, m, v if isinstance(v, float) else tuple(v))
                    for e, p, s, k, m, v in sorted(self._heap)],
            timeline=self.timeline.image() if self.timeline is not None else None,
        )

    def _rows(self) -> MerchantRows:
        rows = array("d")
        extend = rows.extend
        for state in self._state.values():
            extend(state)
        return MerchantRows(list(self._state), rows)

    def load(self, image: TableImage) -> None:
        """Replace the table's state with an image's (after ``reset``; the local partitions
        and their floor are the caller's, as after a rebuild). ImageMismatch when it was
        folded under other parameters or its rows do not have the table's width.

        An image taken under another ``delta_s`` is loaded: the fold does not depend on it,
        only how far back the copies reach (``release``). Under a longer one, reads with a
        cutoff before the image's horizon are counted stale until the partitions' clocks
        pass it (at most the difference of event time); refusing the image instead would
        fold the whole merchant feed again, up to its 90 days, after a settings change.

        >>> table = MerchantTable(partitions=1)
        >>> table.add(0, 1, 100.0, "m1", TX, 0.0); table.watermark(0, 150.0)
        >>> copy = MerchantTable(partitions=1); copy.load(table.image())
        >>> a, b = {}, {}
        >>> table.read("m1", 140.0, 150.0, a), copy.read("m1", 140.0, 150.0, b), a == b
        (True, True, True)
        """
        if _folding(image.params) != _folding(self.params()):
            raise ImageMismatch(f"the merchant table image was folded with {image.params}, "
                                f"this table runs {self.params()}")
        width = merchant_state.WIDTH
        copies = [_copies_of(row) for row in image.copies]
        merchants = image.merchants
        if ((len(merchants.rows) != len(merchants) * width if isinstance(merchants, MerchantRows)
             else any(len(state) != width for _, state in merchants))
                or any(len(c.rows) != len(c.effs) * width for _, c in copies)
                or len(image.marks) != self.partitions):
            raise ImageMismatch("the merchant table image's rows do not fit this table "
                                f"({width} values per merchant, {self.partitions} partitions)")
        if (image.timeline is None) != (self.timeline is None):
            raise ImageMismatch("the merchant table image was taken with"
                                + (" " if image.timeline is not None else "out ")
                                + "the shared champion; this table runs"
                                + (" " if self.timeline is not None else "out ") + "it")
        if self.timeline is not None:
            self.timeline.check(image.timeline)
        self.reset()
        if self.timeline is not None:
            self.timeline.load(image.timeline)
        self._marks = list(image.marks)
        self._frontier = image.frontier
        self._horizon = image.horizon
        self.folded = image.folded
        if isinstance(merchants, MerchantRows):
            rows = merchants.rows
            self._state = OrderedDict((m, rows[i * width:(i + 1) * width])
                                      for i, m in enumerate(merchants.names))
        else:
            self._state = OrderedDict((m, array("d", state)) for m, state in merchants)
        self._before = {m: c for m, c in copies if len(c)}
        for eff, m in sorted((eff, m) for m, c in copies for eff in c.effs):
            self._kept.add(eff, m)
        self._heap = [event if type(event[5]) is float else (*event[:5], array("d", event[5]))
                      for event in image.queued]
        heapq.heapify(self._heap)
        self._local_min = min((self._marks[p] for p in self._local), default=_NEVER)
        self._remote_min = min((self._marks[p] for p in range(self.partitions)
                                if p not in self._local), default=_NEVER)


def _copies_of(row: tuple[Any, ...]) -> tuple[str, _Copies]:
    """An image's copies of one merchant as the table keeps them, from either form
    (``TableImage``): ``(merchant, effs, rows)`` or, written before 2026-12-04, ``(merchant,
    [(eff, state), ...])``.

    >>> m, c = _copies_of(("m1", [(1.0, [0.5] * _WIDTH), (2.0, [0.25] * _WIDTH)]))
    >>> m, list(c.effs), c.at(2.0)[0]
    ('m1', [1.0, 2.0], 0.25)
    """
    if len(row) == 3:
        merchant, effs, rows = row
        return merchant, _Copies(array("d", effs), array("d", rows))
    merchant, kept = row
    rows = array("d")
    for _, state in kept:
        if len(state) != _WIDTH:  # rows of another width could add up to the right length
            raise ImageMismatch("the merchant table image's rows do not fit this table "
                                f"({_WIDTH} values per merchant)")
        rows.extend(state)
    return merchant, _Copies(array("d", (eff for eff, _ in kept)), rows)


def _folding(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the fold depends on (``params`` less ``delta_s``)."""
    return {k: v for k, v in params.items() if k != "delta_s"}


FeedEvent = tuple[float, int, str, "Value"]
"""One merchant event as it travels between instances: (eff, kind, merchant, value)."""


class TableView:
    """One partition's window on the shared table: it turns the partition's events into table
    events (effective time, sequence number) and its reads into cutoffs, and keeps the
    partition's watermark.

    ``lateness_s`` is the allowed lateness: an event more than that behind the partition's
    stream time (the latest transaction or label time it processed) counts at
    ``stream time - lateness``. The partition's watermark is ``max(stream time, head) -
    lateness``, where ``head`` is the earliest time still queued for the partition (its
    next transaction or label, when the caller knows it; see ``lookahead``).

    With ``feed=True`` the view also keeps what it emitted since the last ``drain`` (the
    merchant feed: other instances fold this partition's events from it). A view of a
    partition another instance owns is fed by ``apply`` instead, which skips what it has
    seen (by sequence number), so a re-sent feed record changes nothing.

    >>> table = MerchantTable(partitions=1, delta_s=60.0)
    >>> view = TableView(table, partition=0, lateness_s=30.0)
    >>> view.transaction("m1", 1000.0)
    >>> out: dict[str, float] = {}
    >>> view.read("m1", 1080.0, out)  # cutoff 1020 <= frontier 1080 - 30: exact
    >>> round(out["merchant_count_1d"], 4), table.frontier
    (0.9991, 1050.0)
    """

    __slots__ = ("head", "lateness_s", "mark", "outbox", "partition", "published", "seq",
                 "stream_time", "table")

    def __init__(self, table: MerchantTable, partition: int, lateness_s: float = 30.0,
                 feed: bool = False) -> None:
        if not 0.0 <= lateness_s <= table.delta_s:
            raise ValueError(f"lateness_s must be in [0, delta_s={table.delta_s}], "
                             f"got {lateness_s}")
        self.table = table
        self.partition = partition
        self.lateness_s = lateness_s
        self.stream_time = -_NEVER
        self.head = -_NEVER
        self.seq = 0
        self.mark = -_NEVER
        # Emitted since the last drain (feed mode), and the watermark the feed last carried.
        self.outbox: list[FeedEvent] | None = [] if feed else None
        self.published = -_NEVER

    def effective(self, t: float) -> float:
        floor = self.stream_time - self.lateness_s
        return t if t > floor else floor

    def read(self, merchant: str, t: float, out: dict[str, float]) -> None:
        """Features as of ``effective(t) - delta``. The partition is processing ``t`` now, so
        its own watermark moves to ``t - lateness`` first: a partition never waits for itself.
        """
        cutoff = self.effective(t) - self.table.delta_s
        self.seen(t)
        self.table.read(merchant, cutoff, t, out)

    def transaction(self, merchant: str, t: float) -> None:
        self._emit(merchant, t, TX, 0.0)

    def label(self, merchant: str, is_fraud: bool, t: float) -> None:
        self._emit(merchant, t, LABEL, 1.0 if is_fraud else 0.0)

    def learn(self, features: list[float], is_fraud: bool, t: float) -> None:
        """A labelled example for the shared champion, learned when the label is (``t``)."""
        self._emit("", t, LEARN, array("d", [1.0 if is_fraud else 0.0, *features]))

    def seen(self, t: float) -> None:
        """The partition processed an event at ``t`` (one with no merchant part, too); the
        events are processed in event-time order across the local partitions, so all of them
        are past ``t - lateness`` now (``MerchantTable.floor``)."""
        if t > self.stream_time:
            self.stream_time = t
            self._mark()
            self.table.floor(t - self.lateness_s)

    def lookahead(self, head: float) -> None:
        """The earliest event time still queued for this partition (``inf``: none, ever)."""
        self.head = head
        self._mark()

    def idle(self, now: float) -> None:
        """The partition has nothing queued and is at the end of its input: its stream time
        moves to ``now`` (the latest event time the instance knows), so the other partitions
        stop waiting for it. Its next input, if earlier, then counts as late (at ``now -
        lateness``): idleness is the one place wall-clock timing enters the results, which
        is why it applies only to a partition with no input waiting."""
        if now > self.stream_time:
            self.stream_time = now
            self._mark()

    def _emit(self, merchant: str, t: float, kind: int, value: Value) -> None:
        self.seq += 1
        eff = self.effective(t)
        self.table.add(self.partition, self.seq, eff, merchant, kind, value)
        if self.outbox is not None:
            self.outbox.append((eff, kind, merchant, value))
        self.seen(t)

    def _mark(self) -> None:
        s, h = self.stream_time, self.head
        mark = (s if s > h else h) - self.lateness_s
        if mark > self.mark:
            self.mark = mark
            self.table.watermark(self.partition, mark)

    # -- the merchant feed ---------------------------------------------------------------
    def drain(self) -> tuple[int, list[FeedEvent], float, float] | None:
        """What to publish: (sequence number of the first event, the events since the last
        drain, the watermark, the stream time); None when there is nothing new.

        >>> view = TableView(MerchantTable(1), 0, feed=True)
        >>> view.transaction("m1", 100.0); view.transaction("m2", 101.0)
        >>> view.drain()
        (1, [(100.0, 0, 'm1', 0.0), (101.0, 0, 'm2', 0.0)], 71.0, 101.0)
        >>> view.drain() is None
        True
        """
        box = self.outbox
        mark = self.table.effective_mark(self.partition)
        if box is None or (not box and mark <= self.published):
            return None
        self.outbox = []
        self.published = mark
        return self.seq - len(box) + 1, box, mark, self.stream_time

    def apply(self, first_seq: int, events: list[FeedEvent], mark: float,
              stream_time: float) -> int:
        """Fold another instance's feed record for this partition; events already seen (by
        sequence number) are skipped. Returns how many were new.

        >>> table = MerchantTable(2)
        >>> remote = TableView(table, 1)
        >>> remote.apply(1, [(100.0, 0, "m1", 0.0), (101.0, 0, "m1", 0.0)], 90.0, 101.0)
        2
        >>> remote.apply(2, [(101.0, 0, "m1", 0.0)], 95.0, 101.0)  # sent again: skipped
        0
        >>> table.mark_of(1), remote.seq
        (95.0, 2)
        """
        new = 0
        seq = first_seq - 1
        add, partition = self.table.add, self.partition
        for eff, kind, merchant, value in events:
            seq += 1
            if seq > self.seq:
                add(partition, seq, eff, merchant, kind, value)
                new += 1
        if seq > self.seq:
            self.seq = seq
        if stream_time > self.stream_time:
            self.stream_time = stream_time
        if mark > self.mark:
            self.mark = mark
            self.table.watermark(self.partition, mark)
        return new

    def resume(self, seq: int, stream_time: float) -> None:
        """Where a table image left this partition: its events up to ``seq`` are folded, its
        watermark is the table's (the image's), so a feed record already in the image adds
        nothing and one after it continues the numbering."""
        self.seq = seq
        self.stream_time = stream_time
        self.head = -_NEVER
        self.mark = self.table.mark_of(self.partition)
        self.published = self.mark
        if self.outbox is not None:
            self.outbox = []

    def restore(self, seq: int, stream_time: float) -> None:
        """Back to a checkpoint (the changelog's ``v`` row): numbering and stream time resume
        from there; the table itself is rebuilt from the feed."""
        self.seq = seq
        self.stream_time = stream_time
        self.head = -_NEVER
        self.mark = -_NEVER
        self.published = -_NEVER
        if self.outbox is not None:
            self.outbox = []
