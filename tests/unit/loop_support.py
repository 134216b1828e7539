"""In-memory doubles for unit tests that drive `ScorerLoop` under exactly-once: a
transactional producer that keeps what each committed transaction held (and can fail chosen
commits), the clients' committed offsets it implies, and synthetic transaction records of
one partition. Used by test_loop_budget.py, test_idle_checkpoint.py, test_turn_bound.py and
test_lost_membership.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from stream.contracts.codec import decode_transaction
from stream.devtools.synthetic import TrafficConfig, generate
from stream.kafka.classify import ClientError
from stream.kafka.records import BEGINNING, Polled, Record, Source
from stream.kafka.testing import MemoryConsumer, MemoryProducer

TX, LABELS = ("tx", 0), ("labels", 0)


class TransactionalLog(MemoryProducer):
    """Keeps what each committed transaction held; the commits numbered in `fail_commits`
    fail with a timeout (the transaction stays open, to be aborted)."""

    def __init__(self, fail_commits: set[int]) -> None:
        super().__init__()
        self.fail_commits = fail_commits
        self.commit_calls = 0
        self.open: list[bytes | None] = []
        self.pending: dict[Source, int] = {}
        self.verdicts: list[bytes | None] = []  # committed
        self.offsets: dict[Source, int] = {}  # committed

    def begin_transaction(self) -> None:
        super().begin_transaction()
        self.open, self.pending = [], {}

    def send(self, topic: str, key: bytes | None, value: bytes | None, *args: Any,
             **kwargs: Any) -> None:
        super().send(topic, key, value, *args, **kwargs)
        if topic == "verdicts":
            self.open.append(value)

    def send_offsets_to_transaction(self, offsets: Mapping[Source, int], group_metadata: object,
                                    timeout_s: float) -> None:
        super().send_offsets_to_transaction(offsets, group_metadata, timeout_s)
        self.pending.update(offsets)

    def commit_transaction(self, timeout_s: float) -> None:
        self.commit_calls += 1
        if self.commit_calls in self.fail_commits:
            raise ClientError("Local: Timed out", kind="timed_out", retriable=True)
        super().commit_transaction(timeout_s)
        self.verdicts += self.open
        self.offsets.update(self.pending)
        self.open, self.pending = [], {}


def assign_once(consumer: MemoryConsumer, sources: list[Source]) -> None:
    """On a test consumer's first poll: assign `sources` and tell the loop's listener, as a
    group join does."""
    if not consumer.assigned:
        consumer.assigned = list(sources)
        assert consumer.listener is not None
        consumer.listener.on_assigned(list(sources))


class Batches(MemoryConsumer):
    """`records` in polls of the loop's `max_records`, assigned `sources` on the first poll;
    the ends of `sources` reported with the last batch only (`asked`: the polls)."""

    def __init__(self, records: list[Record], sources: list[Source]) -> None:
        super().__init__()
        self.records = records
        self.sources = sources
        self.asked = 0

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        assign_once(self, self.sources)
        self.asked += 1
        batch, self.records = self.records[:max_records], self.records[max_records:]
        return Polled(batch, [] if self.records else list(self.sources), more=bool(self.records))


class LogConsumer(MemoryConsumer):
    """Reads one transactions partition (and an empty labels partition) from a position a
    seek moves; the rebalance listener hears the assignment in the first poll."""

    def __init__(self, records: list[Record]) -> None:
        super().__init__()
        self.log = records
        self.position = 0
        self.on_poll: Callable[[int], None] = lambda _polls: None
        self.polls_made = 0

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        self.polls_made += 1
        self.on_poll(self.polls_made)
        if not self.assigned:
            self.assigned = [TX, LABELS]
            assert self.listener is not None
            self.listener.on_assigned(list(self.assigned))
        batch = self.log[self.position:self.position + max_records]
        self.position += len(batch)
        at_end = [LABELS] + ([TX] if self.position >= len(self.log) else [])
        return Polled(batch, at_end)

    def seek(self, source: Source, offset: int) -> None:
        super().seek(source, offset)
        if source == TX:
            self.position = 0 if offset == BEGINNING else offset


class Checkpoints(TransactionalLog):
    """How many verdicts each committed transaction (each checkpoint) held."""

    def __init__(self) -> None:
        super().__init__(fail_commits=set())
        self.sizes: list[int] = []

    def commit_transaction(self, timeout_s: float) -> None:
        size = len(self.open)
        super().commit_transaction(timeout_s)
        self.sizes.append(size)


class Clients:
    """What the recovery asks of the clients: the group's committed offsets."""

    def __init__(self, producer: TransactionalLog) -> None:
        self.producer = producer

    def committed(self, sources: list[Source], timeout_s: float) -> dict[Source, int | None]:
        return {s: self.producer.offsets.get(s) for s in sources}


def tx_records(count: int) -> list[Record]:
    """`count` synthetic transactions as records of partition tx[0], offsets from 0."""
    values = [orjson.dumps(e) for e in
              generate(TrafficConfig(count=count, fraud_rate=0.05, seed=4, n_cards=40))]
    return [Record("tx", 0, offset, None, value,
                   int(decode_transaction(value).timestamp * 1000))
            for offset, value in enumerate(values)]
