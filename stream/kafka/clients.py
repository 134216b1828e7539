"""What the rest of the project asks of a Kafka client, and the factory that picks one.

Two adapters implement these protocols completely: `rdkafka` (confluent-kafka, librdkafka in
C threads; the default, for speed) and `kafkapython` (kafka-python, pure Python). The
`kafka_client` setting chooses; nothing outside this package imports a client library or
knows which one runs. Calls that fail raise `ClientError` (classify.py) with a kind the
callers decide on; offsets are plain `{(topic, partition): offset}` maps; records are
`Record`s (records.py).

Semantics every adapter keeps (tests/integration/test_kafka_adapters.py checks them on both):

- consumers read `read_committed` and never commit on their own;
- `GroupConsumer.poll` returns at most `max_records`, waits up to `timeout_s` only when nothing
  is fetched yet, and reports the partitions it found at their end (after their records);
- rebalance callbacks run inside `poll`, on the caller's thread, with the partitions of both
  subscribed topics (range assignor: partition N of each topic lands on the same member);
- producers are idempotent with `acks=all`, and key records with Kafka's murmur2 partitioner,
  so a keyed record lands where the Java client (and `stream.contracts.partitioning`) says;
- a producer created with a transactional id does one transaction at a time, and
  `send_offsets_to_transaction` carries the consumer's group metadata (KIP-447).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from stream.errors import ConfigError
from stream.kafka.classify import ClientError
from stream.kafka.logs import limit_client_logs
from stream.kafka.records import Headers, Polled, Source

if TYPE_CHECKING:
    from stream.config import Settings

DeliveryCallback = Callable[[ClientError | None], None]
Offsets = Mapping[Source, int]
CLIENTS = ("librdkafka", "kafka-python")


class RebalanceListener(Protocol):
    """Told of assignment changes, inside `GroupConsumer.poll`."""

    def on_assigned(self, sources: list[Source]) -> None: ...

    def on_revoked(self, sources: list[Source]) -> None: ...

    def on_lost(self, sources: list[Source]) -> None:
        """The membership expired: the partitions already belong to someone else."""


class GroupConsumer(Protocol):
    """A member of the scorer's consumer group, with explicit commits only."""

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None: ...

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        """Up to `max_records`, waiting up to `timeout_s` only when nothing is fetched yet.
        A partition at its end may be reported again by later polls while it stays there.
        An exception raised by a rebalance callback propagates out of poll, and no record is
        lost: the next polls deliver what this one would have."""

    def assignment(self) -> list[Source]: ...

    def pause(self, sources: list[Source]) -> None:
        """Stop returning these partitions' records; after resume the next record returned
        is the one after the last returned (nothing lost, nothing repeated)."""

    def resume(self, sources: list[Source]) -> None: ...

    def seek(self, source: Source, offset: int) -> None:
        """Next poll of `source` starts at `offset` (`records.BEGINNING` for the first)."""

    def commit(self, offsets: Offsets, asynchronous: bool) -> None: ...

    def commit_pending(self) -> bool:
        """True while an asynchronous commit's result is unheard (results are heard in
        polls), or the latest result heard was a failure: the group may not hold the offsets
        last asked for. A synchronous commit that returns was heard, and succeeded."""

    def group_metadata(self) -> object:
        """The member's group metadata, for `Producer.send_offsets_to_transaction` (KIP-447).

        kafka-python's adapter raises ClientError(kind="group_moved",
        `classify.without_generation`) when the member holds no generation: its session
        expired under it (a long pause) and the client has already reset the generation, or
        it is rejoining. A broker accepts a transactional offset commit without a generation
        from anyone, even into a group with members (it skips the member check, for clients
        older than KIP-447), so such a zombie would commit the offsets of work its successor
        redoes: every verdict of that transaction twice. librdkafka's metadata is passed on:
        the broker fenced a frozen member on that adapter (tests/integration/
        test_zombie_member.py)."""

    def lag(self, positions: Offsets) -> dict[Source, int]:
        """Records behind the end of each assigned partition, from the client's cached high
        watermarks (no broker round trip); `positions` overrides the client's positions."""

    def caught_up(self) -> dict[Source, int]:
        """The assigned partitions the client holds nothing more of, as far as its last
        fetch response tells (position at its high watermark), each with that high
        watermark: no broker round trip. A fetch answered before new records were written
        still says so: the caller allows for that (serving/intake.py)."""

    def topic_partitions(self, timeout_s: float) -> dict[str, int]:
        """Partition count of every topic the cluster knows (metadata request)."""

    def close(self) -> None: ...


class Producer(Protocol):
    """An idempotent producer, optionally transactional."""

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        """Enqueue one record; ClientError(kind="queue_full") when the local queue is full."""

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports (their callbacks run here, on the caller's thread)."""

    def flush(self, timeout_s: float) -> int:
        """Wait for every report; returns how many records are still unacknowledged."""

    def init_transactions(self, timeout_s: float) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(self, offsets: Offsets, group_metadata: object,
                                    timeout_s: float) -> None: ...

    def commit_transaction(self, timeout_s: float) -> None: ...

    def abort_transaction(self, timeout_s: float) -> None: ...

    def discard(self) -> None:
        """Drop whatever it still holds, without waiting: the producer is being replaced."""

    def close(self, timeout_s: float) -> None: ...


class Reader(Protocol):
    """A consumer outside any group: assigned explicitly, reads read_committed, never commits.
    Restores state from changelogs and reads bounded ranges for the batch modes."""

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, [] when it does not exist."""

    def watermarks(self, source: Source, timeout_s: float) -> tuple[int, int]:
        """The first offset and the end a read_committed reader can reach (the last stable
        offset); read until that offset or until `Polled.at_end`, whichever comes first."""

    def log_end(self, source: Source, timeout_s: float) -> int:
        """The high watermark, records of still-open transactions included: the last stable
        offset stays below it while a transaction (a crashed instance's) is open."""

    def offsets_for_time(self, sources: list[Source], at_ms: int) -> dict[Source, int | None]:
        """The first offset at or after `at_ms` per partition (None: there is none)."""

    def assign(self, starts: Offsets) -> None:
        """Read these partitions from these offsets (`records.BEGINNING` allowed)."""

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        """Up to `max_records`, waiting up to `timeout_s` only when nothing is fetched yet."""

    def pause(self, sources: list[Source]) -> None:
        """Stop fetching these assigned partitions; what was prefetched for them is dropped
        and fetched again after `resume` (flow control: a rebuild's partitions that run
        ahead)."""

    def resume(self, sources: list[Source]) -> None: ...

    def close(self) -> None: ...


class Admin(Protocol):
    """Topic management."""

    def topics(self) -> dict[str, int]:
        """Partition count per existing topic."""

    def create_topics(self, topics: Mapping[str, tuple[int, int, Mapping[str, str]]]
                      ) -> dict[str, str | None]:
        """Create (name -> (partitions, replication factor, config)); per name None or the
        error; an existing topic is reported as such, not created again."""

    def topic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Configuration of existing topics; a missing topic is left out."""

    def replication_factors(self, names: list[str]) -> dict[str, int]:
        """Replicas per partition of each existing topic (the largest, if they differ)."""

    def delete_topics(self, names: list[str]) -> None:
        """Delete these topics (best effort: missing ones are ignored)."""

    def close(self) -> None: ...


class Clients(Protocol):
    """Every client the project builds, configured from one Settings."""

    name: str

    def group_consumer(self) -> GroupConsumer: ...

    def producer(self, transactional_id: str | None = None, linger_ms: float = 2.0,
                 max_queued: int = 100_000) -> Producer:
        """`max_queued`: records sent and not yet acknowledged before `send` raises
        ClientError(kind="queue_full") (librdkafka's queue.buffering.max.messages)."""

    def reader(self, bulk: bool = False) -> Reader:
        """`bulk`: tuned for reading whole partitions fast (restores)."""

    def admin(self) -> Admin: ...

    def committed(self, sources: list[Source], timeout_s: float) -> dict[Source, int | None]:
        """The group's committed offsets, from a fresh client (None: nothing committed)."""


def _check_tls_files(settings: Settings) -> None:
    """A CA, certificate or key file that is not there fails now, in one line, rather than
    as a client's error deep in a connection attempt."""
    if not settings.security_protocol.endswith("SSL"):
        return
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{name} {path}: no such file")


def connect(settings: Settings) -> Clients:
    """The adapter the `kafka_client` setting names (imported only when chosen); the
    clients' own log lines are rate-limited from here on (logs.py)."""
    _check_tls_files(settings)
    limit_client_logs()
    if settings.kafka_client == "librdkafka":
        from stream.kafka.rdkafka import RdkafkaClients

        return RdkafkaClients(settings)
    if settings.kafka_client == "kafka-python":
        from stream.kafka.kafkapython import KafkaPythonClients

        return KafkaPythonClients(settings)
    raise ConfigError(f"kafka_client must be one of {', '.join(CLIENTS)}, "
                      f"got {settings.kafka_client!r}")
