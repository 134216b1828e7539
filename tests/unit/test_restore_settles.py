"""A restore waits for transactions open when it starts (stream/kafka/restore.py): the last
stable offset must reach the log end first, or checkpoints committed behind a crashed
instance's open transaction are missed. The broker test is in test_kafka_adapters.py."""

from __future__ import annotations

import pytest

from stream.errors import InfrastructureError
from stream.kafka.records import BEGINNING, Polled, Record
from stream.kafka.restore import read_partition

TOPIC = "app.changelog"


class _OpenTransaction:
    """Offset 0 is an open transaction's record (aborted after `stable_after` queries);
    offset 1 a later committed row; the reader sees up to the last stable offset."""

    def __init__(self, stable_after: int) -> None:
        self.queries = 0
        self.stable_after = stable_after
        self.rows = [Record(TOPIC, 0, 1, b"c:later", b"[5.0, 1.0]", 0, ())]

    def watermarks(self, source: tuple[str, int], timeout_s: float) -> tuple[int, int]:
        self.queries += 1
        return 0, (3 if self.queries > self.stable_after else 0)

    def log_end(self, source: tuple[str, int], timeout_s: float) -> int:
        return 2

    def assign(self, starts: dict[tuple[str, int], int]) -> None:
        assert list(starts.values()) == [BEGINNING]

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        seen = self.rows if self.queries > self.stable_after else []
        return Polled(list(seen), [(TOPIC, 0)])

    def close(self) -> None:
        pass


def test_the_restore_reads_the_row_committed_behind_an_open_transaction() -> None:
    reader = _OpenTransaction(stable_after=3)
    state = read_partition(reader, TOPIC, 0, settle_s=5.0)  # type: ignore[arg-type]
    assert state.cards == {"later": [5.0, 1.0]} and reader.queries == 4


def test_a_transaction_that_never_ends_fails_the_restore_instead_of_restoring_stale_state(
        ) -> None:
    reader = _OpenTransaction(stable_after=10**9)
    with pytest.raises(InfrastructureError, match=r"last stable offset 0, log end 2"):
        read_partition(reader, TOPIC, 0, settle_s=0.3)  # type: ignore[arg-type]


def test_nothing_open_reads_at_once() -> None:
    reader = _OpenTransaction(stable_after=0)
    state = read_partition(reader, TOPIC, 0, settle_s=0.0)  # type: ignore[arg-type]
    assert list(state.cards) == ["later"] and reader.queries == 1
