"""A changelog partition served from memory, for restore tests without a broker: the
`Clients.reader()` a `Recovery` reads a changelog partition through; and, for loop tests, an
empty changelog, clients around it and a consumer that is a group of one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from stream.kafka.clients import RebalanceListener
from stream.kafka.records import BEGINNING, Polled, Record
from stream.kafka.testing import MemoryConsumer


class ChangelogReader:
    """One changelog partition as records, read from the beginning (`read_partition`)."""

    def __init__(self, records: list[Record], topic: str) -> None:
        self.records = records
        self.topic = topic

    def watermarks(self, source: tuple[str, int], timeout_s: float) -> tuple[int, int]:
        return 0, len(self.records)

    def log_end(self, source: tuple[str, int], timeout_s: float) -> int:
        return len(self.records)

    def assign(self, starts: dict[tuple[str, int], int]) -> None:
        assert list(starts.values()) == [BEGINNING]

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        return Polled(list(self.records), [(self.topic, 0)])

    def close(self) -> None:
        pass


class ChangelogClients:
    """The clients a Recovery needs: a reader of the changelog, no committed offsets."""

    def __init__(self, records: list[Record], topic: str) -> None:
        self.records = records
        self.topic = topic

    def reader(self, bulk: bool = False) -> ChangelogReader:
        return ChangelogReader(self.records, self.topic)

    def committed(self, sources: list[Any], timeout_s: float) -> dict[Any, int | None]:
        return {}


class EmptyChangelog:
    """A changelog with nothing in it yet: every partition starts fresh (after `delay_s`
    per partition, a restore that takes time)."""

    def __init__(self, partitions: Sequence[int] = (0, 1), delay_s: float = 0.0) -> None:
        self._partitions = list(partitions)
        self.delay_s = delay_s

    def partitions(self, topic: str) -> list[int]:
        return list(self._partitions)

    def watermarks(self, source: tuple[str, int], timeout_s: float) -> tuple[int, int]:
        time.sleep(self.delay_s)
        return 0, 0

    def log_end(self, source: tuple[str, int], timeout_s: float) -> int:
        return 0

    def assign(self, starts: dict[tuple[str, int], int]) -> None:
        pass

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        return Polled()

    def close(self) -> None:
        pass


class LoopClients:
    """The clients a ScorerLoop reads through besides its consumer: a changelog reader, no
    committed offsets."""

    name = "memory"

    def __init__(self, reader: Callable[[], Any] = EmptyChangelog) -> None:
        self._reader = reader

    def reader(self, bulk: bool = False) -> Any:
        return self._reader()

    def committed(self, sources: list[Any], timeout_s: float) -> dict[Any, int | None]:
        return {}


class GroupOfOne(MemoryConsumer):
    """Assigns every partition of the subscribed topics on subscribe, as a group of one
    would, and hands out the queued polls."""

    def __init__(self, polls: list[Polled] | None = None,
                 partitions: Sequence[int] = (0, 1)) -> None:
        super().__init__(polls)
        self._partitions = list(partitions)

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        super().subscribe(topics, listener)
        self.assigned = [(t, p) for t in topics for p in self._partitions]
        listener.on_assigned(list(self.assigned))

    def close(self) -> None:
        pass
