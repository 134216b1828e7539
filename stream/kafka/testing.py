"""In-memory stand-ins for the Kafka clients, for unit tests of the loop, the intake and the
delivery guarantees without a broker (as Bytewax ships `bytewax.testing`).

They keep the protocols of stream/kafka/clients.py and record what was asked of them; the
test decides when delivery reports arrive and which calls fail. Everything that crosses a
real broker is tested in tests/integration on both real adapters.

>>> producer = MemoryProducer()
>>> seen = []
>>> producer.send("verdicts", b"k", b"v", on_delivery=seen.append)
>>> seen  # no report until the test acknowledges the record
[]
>>> producer.ack(), seen
(1, [None])
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from stream.kafka.classify import ClientError, without_generation
from stream.kafka.clients import DeliveryCallback, RebalanceListener
from stream.kafka.records import Headers, Polled, Source


class MemoryConsumer:
    """A group consumer that hands out the polls a test queued, and records the rest."""

    def __init__(self, polls: list[Polled] | None = None) -> None:
        self.polls: deque[Polled] = deque(polls or [])
        self.assigned: list[Source] = []
        self.paused: set[Source] = set()
        self.calls: list[tuple[str, Any]] = []
        self.commits: list[tuple[dict[Source, int], bool]] = []
        self.listener: RebalanceListener | None = None
        self.generation = 1  # -1: the session expired under it (the client reset it)
        # What `caught_up` says: the partitions the client holds nothing more of, each with
        # its high watermark.
        self.caught: dict[Source, int] = {}
        # What `commit_pending` says: a test holds an asynchronous commit's result unheard.
        self.pending = False

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self.listener = listener

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        return self.polls.popleft() if self.polls else Polled()

    def assignment(self) -> list[Source]:
        return list(self.assigned)

    def pause(self, sources: list[Source]) -> None:
        self.calls.append(("pause", list(sources)))
        self.paused.update(sources)

    def resume(self, sources: list[Source]) -> None:
        self.calls.append(("resume", list(sources)))
        self.paused.difference_update(sources)

    def seek(self, source: Source, offset: int) -> None:
        self.calls.append(("seek", (source, offset)))

    def commit(self, offsets: Mapping[Source, int], asynchronous: bool) -> None:
        self.commits.append((dict(offsets), asynchronous))

    def commit_pending(self) -> bool:
        return self.pending

    def group_metadata(self) -> object:
        if self.generation < 0:
            raise without_generation("memory")
        return ("group-metadata", self.generation)

    def lag(self, positions: Mapping[Source, int]) -> dict[Source, int]:
        return {}

    def caught_up(self) -> dict[Source, int]:
        return dict(self.caught)

    def topic_partitions(self, timeout_s: float) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.calls.append(("close", None))


class MemoryProducer:
    """A producer whose delivery reports wait until the test acknowledges them, and whose
    transactional calls fail (or block) as the test scripts them.

    `fail[name]` is a list of exceptions raised by the next calls of `name` ("init", "begin",
    "send", "send_offsets", "commit", "abort"); a name in `block` waits for `release`.
    """

    created = 0

    def __init__(self) -> None:
        MemoryProducer.created += 1
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.unacked: list[DeliveryCallback | None] = []
        self.calls: list[str] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.block: set[str] = set()
        self.release = threading.Event()
        self.discarded = False

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.block:
            self.release.wait(30)
        errors = self.fail.get(name)
        if errors:
            raise errors.pop(0)

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None, headers: Headers | None = None,
             on_delivery: DeliveryCallback | None = None) -> None:
        self._call("send")
        self.sent.append((topic, key, value, partition))
        self.unacked.append(on_delivery)

    def ack(self, n: int | None = None, error: ClientError | None = None) -> int:
        """Deliver the reports of the `n` oldest records (all by default); returns how many."""
        count = len(self.unacked) if n is None else n
        for callback in self.unacked[:count]:
            if callback is not None:
                callback(error)
        del self.unacked[:count]
        return count

    def poll(self, timeout_s: float) -> None:
        pass

    def flush(self, timeout_s: float) -> int:
        self.ack()
        return 0

    def init_transactions(self, timeout_s: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(self, offsets: Mapping[Source, int], group_metadata: object,
                                    timeout_s: float) -> None:
        self._call("send_offsets")

    def commit_transaction(self, timeout_s: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout_s: float) -> None:
        self._call("abort")

    def discard(self) -> None:
        self.discarded = True

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)
