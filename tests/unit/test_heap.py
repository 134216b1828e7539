"""The scorer's heap policy (serving/gc_policy.py `HeapKeeper`): survivors frozen between
turns, so that the collector's passes stop walking the scorer's state; reference cycles
reclaimed by the periodic full pass. Each case runs in a fresh interpreter: freezing this
test process's heap would outlive the test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from loop_support import TX, Batches, Checkpoints, Clients, tx_records
from prometheus_client import CollectorRegistry
from state_support import PER_PARTITION

from stream.assembly import model_version, pipeline_config
from stream.config import Settings, load_settings
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.observability.metrics import Metrics
from stream.serving.gc_policy import HeapKeeper, keeper_for
from stream.serving.loop import ScorerLoop


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_survivors_are_frozen_and_no_pass_walks_them_until_the_full_one() -> None:
    out = _run("""
        import gc, weakref
        from stream.serving.gc_policy import HeapKeeper
        now = [0.0]
        keeper = HeapKeeper(full_every_s=60.0, clock=lambda: now[0])

        class Node:
            pass

        state = [[i] for i in range(20_000)]  # what the scorer keeps (lists: always tracked)
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle among the survivors
        dead = weakref.ref(a)
        now[0] = 0.2
        assert keeper.tick() and keeper.freezes == 1
        frozen = gc.get_freeze_count()
        assert frozen >= 20_000, frozen
        assert sum(gc.get_count()) < 100, gc.get_count()  # nothing left for a pass to walk
        del a, b
        gc.collect()  # an explicit pass, even a full one, skips the frozen
        assert dead() is not None
        now[0] = 0.25
        assert not keeper.tick()  # not due: a turn costs a clock read
        now[0] = 61.0
        assert keeper.tick() and keeper.full_passes == 1
        assert dead() is None and keeper.found >= 2, keeper.found
        assert gc.get_freeze_count() >= 20_000  # frozen again after the full pass
        print("ok")
    """)
    assert out == "ok"


def test_a_full_pass_can_be_turned_off() -> None:
    out = _run("""
        from stream.serving.gc_policy import HeapKeeper
        now = [0.0]
        keeper = HeapKeeper(full_every_s=0.0, clock=lambda: now[0])
        for step in range(1, 50):
            now[0] = step * 1000.0
            assert keeper.tick()
        print(keeper.freezes, keeper.full_passes)
    """)
    assert out == "49 0"


class CountingHeap(HeapKeeper):
    """Counts the loop's ticks; freezes nothing (this is the test process)."""

    def __init__(self) -> None:
        super().__init__(full_every_s=0.0)
        self.ticks = 0

    def tick(self) -> bool:
        self.ticks += 1
        return False


def test_the_loop_ticks_its_heap_keeper_once_a_turn() -> None:
    settings = load_settings(environ={}, group_id="g", input_topic="tx", labels_topic=None,
                             output_topic="verdicts", max_events=500, changelog=False,
                             max_poll_records=50, **PER_PARTITION)
    consumer, producer = Batches(tx_records(500), [TX]), Checkpoints()
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()), Clients(producer),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    heap = loop.heap = CountingHeap()
    assert loop.run().transactions == 500
    assert heap.ticks >= 10 and heap.ticks >= consumer.asked - 2, (heap.ticks, consumer.asked)


def test_kafka_python_keeps_the_collectors_own_passes() -> None:
    def settings(client: str) -> Settings:
        return load_settings(environ={}, kafka_client=client, heap_full_collect_s=60.0)

    keeper = keeper_for(settings("librdkafka"))
    assert keeper is not None and keeper.full_every_s == 60.0
    assert keeper_for(settings("kafka-python")) is None
