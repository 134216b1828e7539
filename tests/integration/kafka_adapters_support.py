"""Fixtures and helpers of the Kafka adapter contract suite (test_kafka_adapters*.py).

`make_clients` is parametrized over both adapters, so every test that uses it (or `clients`,
`subscribed`) runs once per adapter, through `connect(Settings)` only: a difference between
librdkafka and kafka-python shows up as a failure of exactly one parametrization. Test
modules import the fixtures by their function names (`*_fixture`) and use them by name.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stream.config import load_settings
from stream.kafka.classify import ClientError
from stream.kafka.clients import Clients, GroupConsumer, Reader, connect
from stream.kafka.records import Polled, Record, Source

T = 30.0  # generous bound on any wait: a failure, not a slow pass, is what we look for


@pytest.fixture(name="make_clients", params=["librdkafka", "kafka-python"])
def make_clients_fixture(request: pytest.FixtureRequest,
                         kafka_bootstrap: str) -> Callable[..., Clients]:
    group = f"g-{uuid.uuid4().hex[:10]}"

    def make(**overrides: Any) -> Clients:
        settings = load_settings(environ={}, bootstrap_servers=kafka_bootstrap,
                                 kafka_client=request.param, group_id=group, **overrides)
        try:
            return connect(settings)
        except ImportError as exc:  # an adapter still being written
            pytest.skip(f"{request.param} adapter not importable: {exc}")
    return make


@pytest.fixture(name="clients")
def clients_fixture(make_clients: Callable[..., Clients]) -> Clients:
    return make_clients()


class Recorder:
    """A RebalanceListener that keeps every event, with the thread it ran on."""

    def __init__(self, on_revoked: Callable[[list[Source]], None] | None = None) -> None:
        self.events: list[tuple[str, list[Source], int]] = []
        self._on_revoked = on_revoked

    def on_assigned(self, sources: list[Source]) -> None:
        self.events.append(("assigned", sorted(sources), threading.get_ident()))

    def on_revoked(self, sources: list[Source]) -> None:
        self.events.append(("revoked", sorted(sources), threading.get_ident()))
        if self._on_revoked is not None:
            self._on_revoked(sources)

    def on_lost(self, sources: list[Source]) -> None:
        self.events.append(("lost", sorted(sources), threading.get_ident()))


def produce(clients: Clients, topic: str, n: int, start: int = 0,
            partition: int | None = None) -> None:
    producer = clients.producer()
    try:
        for i in range(start, start + n):
            producer.send(topic, f"k{i}".encode(), f"v{i}".encode(), partition=partition,
                          headers=(("i", str(i).encode()),))
        assert producer.flush(T) == 0
    finally:
        producer.close(T)


@pytest.fixture(name="subscribed")
def subscribed_fixture(clients: Clients, new_topic: Callable[..., str]
               ) -> Iterator[Callable[..., tuple[GroupConsumer, Recorder]]]:
    """Group consumers, closed before the test's topics are deleted."""
    opened: list[GroupConsumer] = []

    def make(topics: list[str], listener: Recorder | None = None) -> tuple[GroupConsumer,
                                                                         Recorder]:
        consumer, recorder = clients.group_consumer(), listener or Recorder()
        consumer.subscribe(topics, recorder)
        opened.append(consumer)
        return consumer, recorder
    yield make
    for consumer in opened:
        try:
            consumer.close()
        except ClientError:
            pass


def drain(consumer: GroupConsumer | Reader, want: int, max_records: int = 500,
          until_at_end: set[Source] | None = None,
          timeout_s: float = T) -> tuple[list[Record], set[Source]]:
    """Poll until `want` records (and every source in `until_at_end` reported at its end)."""
    records: list[Record] = []
    at_end: set[Source] = set()
    deadline = time.monotonic() + timeout_s
    while len(records) < want or not (until_at_end or set()) <= at_end:
        assert time.monotonic() < deadline, f"got {len(records)}/{want}, at end {at_end}"
        polled: Polled = consumer.poll(max_records, 0.2)
        assert len(polled.records) <= max_records
        records.extend(polled.records)
        at_end -= {r.source for r in polled.records}
        at_end |= set(polled.at_end)
    return records, at_end


def offsets(records: list[Record], source: Source) -> list[int]:
    return [r.offset for r in records if r.source == source]
