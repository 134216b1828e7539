"""The kafka-python adapter's rebalance bridge without a broker: a job runs on the worker, the
callbacks it triggers (on kafka-python's IO loop, here a stand-in) run on the polling thread,
and a job that outlives one poll is picked up by the next."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import TopicPartition

from stream.kafka.kafkapython_rebalance import CallbackError, CallerThread
from stream.kafka.records import Source


class FakeLoop:
    """kafka-python's IO loop, reduced to what the bridge uses: a thread running callables
    handed to `call_soon_threadsafe`, and coroutines awaiting kafka Futures."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self._calls.get()()

    def call_soon_threadsafe(self, call: Callable[[], None]) -> None:
        self._calls.put(call)

    def await_on_loop(self, coroutine: Any) -> None:
        """Drive `coroutine` on the loop's thread; block the calling thread until it ends."""
        finished = threading.Event()

        def step() -> None:
            try:
                future = coroutine.send(None)
            except StopIteration:
                finished.set()
                return
            future.add_both(lambda _: self._calls.put(step))
        self._calls.put(step)
        assert finished.wait(5)


class Listener:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[Source], int]] = []
        self.fail = fail

    def on_assigned(self, sources: list[Source]) -> None:
        self.calls.append(("assigned", sources, threading.get_ident()))
        if self.fail:
            raise RuntimeError("restore failed")

    def on_revoked(self, sources: list[Source]) -> None:
        self.calls.append(("revoked", sources, threading.get_ident()))

    def on_lost(self, sources: list[Source]) -> None:
        self.calls.append(("lost", sources, threading.get_ident()))


def bridge_with(listener: Listener) -> tuple[CallerThread, FakeLoop]:
    loop = FakeLoop()
    bridge = CallerThread(loop)
    bridge.listener = listener
    return bridge, loop


def test_callbacks_run_on_the_polling_thread_while_the_job_waits() -> None:
    listener = Listener()
    bridge, loop = bridge_with(listener)
    relay = bridge.kafka_listener()

    def kafka_poll() -> str:  # on the worker, as KafkaConsumer.poll during a rebalance
        loop.await_on_loop(relay.on_partitions_revoked(set()))  # first join: not an event
        loop.await_on_loop(relay.on_partitions_assigned({TopicPartition("t", 1),
                                                         TopicPartition("t", 0)}))
        return "records"
    assert bridge.run(kafka_poll, wait_s=5) == (True, "records")
    assert listener.calls == [("assigned", [("t", 0), ("t", 1)], threading.get_ident())]
    bridge.stop()


def test_a_job_that_outlives_its_poll_is_resumed_not_repeated() -> None:
    bridge, _ = bridge_with(Listener())
    started: list[str] = []

    def slow() -> str:
        started.append("slow")
        time.sleep(0.3)
        return "late records"
    assert bridge.run(slow, wait_s=0.05, resume=True) == (False, None)
    assert bridge.run(lambda: started.append("new") or "", wait_s=5,
                      resume=True) == (True, "late records")
    assert started == ["slow"]
    assert bridge.run(lambda: "next", wait_s=5, resume=True) == (True, "next")
    bridge.stop()


def test_a_failing_callback_is_raised_after_the_job_with_its_result() -> None:
    listener = Listener(fail=True)
    bridge, loop = bridge_with(listener)
    relay = bridge.kafka_listener()

    def kafka_poll() -> str:
        loop.await_on_loop(relay.on_partitions_assigned({TopicPartition("t", 0)}))
        return "records"
    with pytest.raises(CallbackError) as raised:
        bridge.run(kafka_poll, wait_s=5)
    assert raised.value.result == "records"
    assert str(raised.value.error) == "restore failed"
    bridge.stop()


def test_a_job_error_is_raised_on_the_polling_thread() -> None:
    bridge, _ = bridge_with(Listener())

    def broken() -> None:
        raise ValueError("max_records must be positive")
    with pytest.raises(ValueError, match="positive"):
        bridge.run(broken, wait_s=5)
    assert bridge.run(lambda: 1, wait_s=5, resume=True) == (True, 1)
    bridge.stop()
