"""What the loop has done, and what of it is durable: counts, finished offsets, checkpoints.

Every record processed moves its partition's next offset in `done`; a checkpoint makes that
durable. `high` is the furthest each source has been processed, never rolled back: a record
below it is a replay (after a rewind, the records since the last committed checkpoint are done
again), which counts neither in `result` nor in the metrics a second time. So `--max-events`
counts each input record once, whether the rewind went back to the last checkpoint, to an
older one (at-least-once commits offsets asynchronously) or to none at all (a checkpoint whose
commit timed out yet went through is not redone). `durable_events` is each partition's event
count as of its last restore or checkpoint.

`failures` and `failing_since` say how many checkpoints failed since the last one that
succeeded, and since when: a rewind that succeeds is not a recovery until a checkpoint does.
`isolate_until` holds, while a record that makes an output too large is searched for, the
positions up to which every record is checkpointed alone (see serving/recovery.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from stream.kafka.records import Source

# The exit line's names for what can make a run depart from a replay of the same input; the
# Kafka check of `make quality` reads them back (benchmarks/quality/kafka_check.py).
REWINDS = "rewinds"
UNALIGNED = "records released out of assured event-time order"
MERCHANT_WAITS = "merchant waits given up"


@dataclass(slots=True)
class RunResult:
    """What a run did, for the CLI's exit line and for tests."""

    transactions: int = 0
    verdicts: int = 0
    # Verdicts that repeated an earlier one (a duplicate transaction id; in `verdicts` too).
    duplicates: int = 0
    dead_letters: int = 0
    labels: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    labels_learned: int = 0
    roc_auc: float = math.nan
    checkpoints: int = 0
    recoveries: int = 0
    # Records released after polling max_task_idle_ms in vain for another source: their
    # event-time order (and so the run's scores) is not assured to match a replay.
    alignment_timeouts: int = 0
    # Times the loop stopped holding input back for the other instances' merchant events
    # after merchant_max_wait_ms, and read the shared merchant table as it was.
    merchant_wait_timeouts: int = 0

    def line(self) -> str:
        """The CLI's exit line. Rewinds and unaligned releases are named only when they
        happened: they are why a run's scores can differ from a replay of the same input.

        >>> print(RunResult(transactions=3, verdicts=3, roc_auc=0.5).line().split("; "))
        ... # doctest: +NORMALIZE_WHITESPACE
        ['processed 3 records: 3 verdicts, 0 dead letters, 0 labels',
         'learned from 0 labels, rolling ROC AUC 0.5000']
        >>> print(RunResult(recoveries=1, alignment_timeouts=40).line().split("; ", 2)[2])
        1 rewinds; 40 records released out of assured event-time order (max_task_idle_ms)
        """
        parts = [f"processed {self.transactions} records: {self.verdicts} verdicts, "
                 f"{self.dead_letters} dead letters, {self.labels} labels",
                 f"learned from {self.labels_learned} labels, rolling ROC AUC "
                 f"{self.roc_auc:.4f}"]
        if self.recoveries:
            parts.append(f"{self.recoveries} {REWINDS}")
        if self.alignment_timeouts:
            parts.append(f"{self.alignment_timeouts} {UNALIGNED} (max_task_idle_ms)")
        if self.merchant_wait_timeouts:
            parts.append(f"{self.merchant_wait_timeouts} {MERCHANT_WAITS} (merchant_max_wait_ms)")
        return "; ".join(parts)

    def copy(self) -> RunResult:
        return replace(self, dead_letter_reasons=dict(self.dead_letter_reasons))


class Ledger:
    """The loop's bookkeeping between checkpoints.

    >>> ledger = Ledger()
    >>> ledger.processed(("tx", 0), 5, transaction=True)
    True
    >>> ledger.checkpointed({0: 1}); ledger.processed(("tx", 0), 6, transaction=True)
    True
    >>> ledger.rewound(); ledger.processed(("tx", 0), 6, transaction=True)  # done again
    False
    >>> ledger.result.transactions, ledger.high, ledger.replayed(("tx", 0), 5)
    (2, {('tx', 0): 6}, True)
    """

    def __init__(self) -> None:
        self.result = RunResult()
        self.done: dict[Source, int] = {}
        # The next offset of each source as of this process's last checkpoint of it.
        self.committed: dict[Source, int] = {}
        self.record_ts: list[int] = []  # Kafka timestamps of the outputs since the checkpoint
        self.since_checkpoint = 0
        self.durable_events: dict[int, int] = {}
        self.high: dict[Source, int] = {}
        self.failures = 0
        self.failing_since: float | None = None
        self.isolate_until: dict[Source, int] = {}
        # After a rewind: how far each source must be done again before the run may end.
        self.redo_until: dict[Source, int] = {}

    def processed(self, source: Source, next_offset: int, transaction: bool) -> bool:
        """Note a record done (a transaction, else a label); True the first time."""
        self.done[source] = next_offset
        self.since_checkpoint += 1
        high = self.high
        if next_offset <= high.get(source, 0):
            redo = self.redo_until
            if next_offset >= redo.get(source, next_offset + 1):
                del redo[source]
            return False
        high[source] = next_offset
        if transaction:
            self.result.transactions += 1
        else:
            self.result.labels += 1
        return True

    def positions(self) -> dict[Source, int]:
        """The next offset to process per source: done since the last checkpoint, else as
        that checkpoint committed it (sources absent: nothing known yet).

        Why not the client's position: that moves when a record is fetched, not when it is
        done. Input fetched and then held (by the intake, or lost by a defect) would count
        as no lag at all, and a scorer that stopped with thousands of records in hand would
        look caught up, its stall silent (two instances stalled so for 4 minutes).

        >>> ledger = Ledger()
        >>> ledger.processed(("tx", 0), 5, transaction=True)
        True
        >>> ledger.checkpointed({}); ledger.processed(("tx", 1), 9, transaction=True)
        True
        >>> ledger.positions()
        {('tx', 0): 5, ('tx', 1): 9}
        >>> ledger.forget([("tx", 0)]); ledger.positions()
        {('tx', 1): 9}
        """
        return {**self.committed, **self.done}

    def forget(self, sources: list[Source]) -> None:
        """Sources no longer ours (revoked, lost): what this process last committed of them
        says nothing of where their next owner is."""
        for source in sources:
            self.committed.pop(source, None)

    def replayed(self, source: Source, offset: int) -> bool:
        """True for a record this process has processed before (and now does again)."""
        return offset < self.high.get(source, 0)

    def checkpointed(self, durable_events: dict[int, int]) -> None:
        """Everything so far is durable."""
        self.failures = 0
        self.failing_since = None
        isolate = self.isolate_until
        if isolate:
            for source, next_offset in self.done.items():
                if next_offset >= isolate.get(source, next_offset + 1):
                    del isolate[source]
        self.committed.update(self.done)
        self.done.clear()
        self.record_ts.clear()
        self.since_checkpoint = 0
        self.result.checkpoints += 1
        self.durable_events = durable_events

    def rewound(self) -> None:
        """Forget the work since the last checkpoint (it will be done again, uncounted)."""
        self.redo_until = dict(self.high)
        self.done.clear()
        self.record_ts.clear()
        self.since_checkpoint = 0
