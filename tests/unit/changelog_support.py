"""A changelog partition served from memory, for restore tests without a broker: the
`Clients.reader()` a `Recovery` reads a changelog partition through."""

from __future__ import annotations

from typing import Any

from stream.kafka.records import BEGINNING, Polled, Record


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
