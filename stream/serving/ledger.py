"""What the loop has done, and what of it is durable: counts, finished offsets, checkpoints.

Every record processed moves its partition's next offset in `done`; a checkpoint makes that
durable and the ledger remembers the counts as of then (`committed`). A rewind rolls the counts
back to them, so `--max-events` counts each input record once even when work is redone, and
`durable_events` (events per partition as of its last durable checkpoint) lets the rewind count
a checkpoint whose commit timed out yet went through exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from stream.kafka.records import Source


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

    def copy(self) -> RunResult:
        return replace(self, dead_letter_reasons=dict(self.dead_letter_reasons))


class Ledger:
    """The loop's bookkeeping between checkpoints.

    >>> ledger = Ledger()
    >>> ledger.processed(("tx", 0), 5); ledger.result.transactions += 1
    >>> ledger.checkpointed({0: 1}); ledger.processed(("tx", 0), 6)
    >>> ledger.result.transactions += 1; ledger.rewound(); ledger.result.transactions
    1
    """

    def __init__(self) -> None:
        self.result = RunResult()
        self.committed = RunResult()
        self.done: dict[Source, int] = {}
        self.record_ts: list[int] = []  # Kafka timestamps of the outputs since the checkpoint
        self.since_checkpoint = 0
        self.durable_events: dict[int, int] = {}

    def processed(self, source: Source, next_offset: int) -> None:
        self.done[source] = next_offset
        self.since_checkpoint += 1

    def checkpointed(self, durable_events: dict[int, int]) -> None:
        """Everything so far is durable."""
        self.done.clear()
        self.record_ts.clear()
        self.since_checkpoint = 0
        self.result.checkpoints += 1
        self.durable_events = durable_events
        self.committed = self.result.copy()

    def rewound(self) -> None:
        """Forget the work since the last checkpoint (it will be done again)."""
        keep = self.result.recoveries, self.result.checkpoints
        self.result = self.committed.copy()
        self.result.recoveries, self.result.checkpoints = keep
        self.done.clear()
        self.record_ts.clear()
        self.since_checkpoint = 0

    def count_in_doubt(self, before: dict[int, int]) -> int:
        """A commit that timed out may still have been committed by the broker: the restored
        state then holds events the counters rolled back. Count them (returns how many), so
        `--max-events` is reached, and a rewind never waits for records already done."""
        extra = sum(max(0, events - before.get(p, events))
                    for p, events in self.durable_events.items())
        if extra:
            self.result.transactions += extra
            self.result.verdicts += extra
            self.committed = self.result.copy()
        return extra
