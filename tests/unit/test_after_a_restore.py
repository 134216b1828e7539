"""What surrounds a restore: the partition's old state goes before the changelog is read, the
memory the restore freed is given back to the operating system, and the loop
waits for every partition's first fetch, as at any start: the event-time alignment's wait for
an empty partition starts when the restore ends, not at the assignment. A restore longer than
`max_task_idle_ms` (seconds, with a big changelog or the merchant feed) otherwise used up the
wait before anything was fetched, and the first partition fetched went ahead of the others'
earlier records: a restarted scorer then scored in another order than an uninterrupted one (the
shared merchant table read stale state), which the durability suite's restart-versus-
uninterrupted comparison caught on a loaded machine."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from changelog_support import EmptyChangelog, GroupOfOne, LoopClients
from fuzz_support import NOW_MS
from keys_support import KEY
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import pipeline_config
from stream.config import load_settings
from stream.core.pipeline import Pipeline
from stream.errors import InfrastructureError
from stream.kafka.clients import RebalanceListener
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Record
from stream.kafka.testing import MemoryProducer
from stream.observability.metrics import Metrics
from stream.serving import rebalance
from stream.serving.loop import ScorerLoop

RESTORE_S = 0.4  # per partition; the alignment waits 0.3 s for an empty one


def _tx(partition: int, tid: str, at_ms: int) -> Record:
    value = orjson.dumps({"transaction_id": tid, "card_id": f"card-{partition}",
                          "merchant_id": "m1", "amount": 10.0, "timestamp": at_ms})
    return Record("transactions", partition, 0, f"card-{partition}".encode(), value, at_ms)


class AssignedInPoll(GroupOfOne):
    """Assigns inside the first poll, as the real clients do (the rebalance callback runs in
    `poll`): the restore's time is then inside the poll that the alignment times."""

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self._topics, self._listener = topics, listener

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        if not self.assigned:
            self.assigned = [(t, p) for t in self._topics for p in self._partitions]
            self._listener.on_assigned(list(self.assigned))
        return super().poll(max_records, timeout_s)


def _run(records: list[Polled], consumer_type: type[GroupOfOne] = GroupOfOne
         ) -> tuple[ScorerLoop, list[str]]:
    settings = load_settings(environ={}, idle_exit_s=0.5, max_task_idle_ms=300.0,
                             **PER_PARTITION)
    consumer = consumer_type(records)
    made: list[MemoryProducer] = []

    def producer() -> MemoryProducer:
        made.append(MemoryProducer())
        return made[-1]

    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings, KEY)),
                      Metrics(CollectorRegistry()),
                      LoopClients(lambda: EmptyChangelog(delay_s=RESTORE_S)),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(producer, consumer, timeout_s=1.0))
    loop.run()
    scored = [orjson.loads(value or b"")["transaction_id"] for p in made
              for topic, _, value, _ in p.sent if topic == settings.output_topic]
    return loop, scored


@pytest.mark.parametrize("consumer_type", [GroupOfOne, AssignedInPoll])
def test_the_first_partition_fetched_after_a_long_restore_waits_for_the_others(
        consumer_type: type[GroupOfOne]) -> None:
    labels = [("labels", 0), ("labels", 1)]
    loop, scored = _run([
        # Partition 1 comes first with a later transaction; partition 0 in the next poll.
        Polled([_tx(1, "later", NOW_MS + 60_000)], at_end=[("transactions", 1), *labels]),
        Polled([_tx(0, "earlier", NOW_MS)], at_end=[("transactions", 0), ("transactions", 1),
                                                    *labels]),
    ], consumer_type)
    assert scored == ["earlier", "later"]
    assert loop.intake.timed_out == 0


def test_the_memory_a_restore_freed_is_given_back_after_the_restores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc keeps freed pages in its arenas (librdkafka's fetch buffers are allocated on its
    own threads): without a trim each restore left the soak's process on a plateau
    100-155 MiB higher (a 150,000-event changelog: 436-448 MiB idle after a restore without
    it, 316-332 MiB with it, three runs each, 2026-11-30)."""
    calls: list[int] = []
    monkeypatch.setattr(rebalance, "return_freed_memory", lambda: calls.append(1) or True)
    _run([])
    assert calls == [1]  # once, after both partitions restored


class _Watching(EmptyChangelog):
    """An empty changelog that notes, when a partition's read starts, which partitions the
    pipeline still holds state for."""

    def __init__(self, pipeline: Pipeline, seen: list[tuple[int, list[int]]]) -> None:
        super().__init__()
        self.pipeline, self.seen = pipeline, seen

    def watermarks(self, source: tuple[str, int], timeout_s: float) -> tuple[int, int]:
        self.seen.append((source[1], sorted(self.pipeline.partitions)))
        return super().watermarks(source, timeout_s)


def test_a_rewind_drops_a_partitions_state_before_reading_its_changelog() -> None:
    """Old and restored state side by side made each rewind (a broker restart) a step up in
    the soak's RSS: the restore's reads and folds now reuse the old state's memory."""
    settings = load_settings(environ={}, idle_exit_s=0.3, max_task_idle_ms=0.0,
                             **PER_PARTITION)
    pipeline = Pipeline(pipeline_config(settings, KEY))
    seen: list[tuple[int, list[int]]] = []
    consumer = GroupOfOne([Polled([_tx(0, "a", NOW_MS), _tx(1, "b", NOW_MS)])])
    loop = ScorerLoop(settings, pipeline, Metrics(CollectorRegistry()),
                      LoopClients(lambda: _Watching(pipeline, seen)),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(MemoryProducer, consumer, timeout_s=1.0))
    loop.run()
    assert {p: state.events for p, state in pipeline.partitions.items()} == {0: 1, 1: 1}
    seen.clear()
    loop.recovery.rewind()
    assert seen == [(0, [1]), (1, [0])]  # each read without its own partition's old state
    # The (empty) changelog is what the partitions are now.
    assert {p: state.events for p, state in pipeline.partitions.items()} == {0: 0, 1: 0}


class _CoordinatorLoading(LoopClients):
    """A group coordinator still loading after a broker restart: the first read of committed
    offsets fails, while the changelog can be read; counts the changelog reads."""

    def __init__(self) -> None:
        super().__init__(self._read)
        self.reads = 0
        self.asked = 0

    def _read(self) -> EmptyChangelog:
        self.reads += 1
        return EmptyChangelog()

    def committed(self, sources: list[Any], timeout_s: float) -> dict[Any, int | None]:
        self.asked += 1
        if self.asked == 1:
            raise InfrastructureError("committed offsets: COORDINATOR_LOAD_IN_PROGRESS")
        return {}


def test_a_rewind_asks_the_group_before_it_rebuilds_anything() -> None:
    """The committed offsets are read first: a rewind that fails there (the coordinator still
    loading) has rebuilt nothing, and the next one rebuilds once. It rebuilt every partition
    and then failed, so one broker restart cost two rebuilds."""
    settings = load_settings(environ={}, idle_exit_s=0.3, max_task_idle_ms=0.0,
                             **PER_PARTITION)
    pipeline = Pipeline(pipeline_config(settings, KEY))
    consumer = GroupOfOne([Polled([_tx(0, "a", NOW_MS), _tx(1, "b", NOW_MS)])])
    clients = _CoordinatorLoading()
    loop = ScorerLoop(settings, pipeline, Metrics(CollectorRegistry()), clients,  # type: ignore[arg-type]
                      consumer, ExactlyOnce(MemoryProducer, consumer, timeout_s=1.0))
    loop.run()
    reads = clients.reads  # the restores on assignment
    with pytest.raises(InfrastructureError):
        loop.recovery.rewind()
    assert clients.reads == reads  # nothing read, nothing dropped
    assert {p: state.events for p, state in pipeline.partitions.items()} == {0: 1, 1: 1}
    loop.recovery.rewind()
    assert clients.reads == reads + 2  # each partition once
    assert {p: state.events for p, state in pipeline.partitions.items()} == {0: 0, 1: 0}
