"""Rebalance callbacks on the caller's thread, for kafka-python 3's consumer.

The protocol (stream.kafka.clients) runs `on_assigned`/`on_revoked`/`on_lost` inside
`GroupConsumer.poll`, on the caller's thread, before the rebalance goes on: `on_revoked`
checkpoints while the old generation is still valid, `on_assigned` restores state before the
partitions are fetched. kafka-python 3 drives all network I/O, heartbeats and the group
protocol on its own IO thread, and calls the rebalance listener there, while the thread that
called `poll()` waits in `NetworkSelector.run` (kafka/consumer/subscription_state.py,
ConsumerRebalanceListener, "Threading"). A listener that ran our callbacks there would block
heartbeats for the whole callback (a restore takes seconds), and any blocking consumer call
inside it (a synchronous commit) raises "Cannot block on net.run() from the IO thread".

So kafka-python's calls that can rebalance run as jobs on a worker thread, and the caller's
thread waits for them. The listener given to kafka-python is an
`AsyncConsumerRebalanceListener`: kafka-python awaits it, so the IO loop keeps heartbeating;
it queues each callback for the caller's thread and awaits its completion. The caller runs
the callback when it is inside `poll` (it may commit, seek, read group metadata: the worker is
parked inside kafka-python), then wakes the IO loop. A job may outlive the poll that started
it (a rebalance waits for the other members): the poll returns empty when its time is up, and
the next poll goes on waiting for the same job, serving its callbacks, and returns its records.
Cost: one thread hand-off per poll (~40 us measured on the 2-core machine; kafka-python itself
spends ~3 ms on a poll of 500 records).

The events map one to one: kafka-python 3 has `on_partitions_lost` (KIP-429,
dpkp/kafka-python#3016), called instead of `on_partitions_revoked` when the membership is
already gone (session expired, unknown member id, illegal generation, fenced instance id),
also on close (dpkp/kafka-python#3020). Eager rebalancing "revokes" an empty set on the first
join; that is not passed on (librdkafka does not report it either). kafka-python logs a
warning for any listener call over 1 s ("Sync listeners block the consumer event loop"); for
this asynchronous relay it only means the callback (a restore) took that long.

kafka-python internals used (kafka-python 3.0.x): `KafkaConsumer._net`, the IO loop, whose
`call_soon_threadsafe` is the only way to wake it from another thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.future import Future

from stream.errors import FraudStreamError
from stream.kafka.clients import RebalanceListener
from stream.kafka.records import Source

log = logging.getLogger("stream.kafka")

_DONE = "done"
_CALL = "call"
_STOP = object()


class CallbackError(FraudStreamError):
    """A rebalance callback raised `error`; `result` is what the job returned (None if it
    has not finished yet)."""

    def __init__(self, result: Any, error: BaseException) -> None:
        super().__init__(f"a rebalance callback failed: {error!r}")
        self.result = result
        self.error = error


class CallerThread:
    """Runs kafka-python calls on a worker thread while the caller's thread serves the
    rebalance callbacks they trigger (see the module docstring)."""

    def __init__(self, net: Any) -> None:
        self._net = net
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._job = 0
        self._running: int | None = None  # the job a later `run(..., resume=True)` waits for
        self.listener: RebalanceListener | None = None

    def kafka_listener(self) -> AsyncConsumerRebalanceListener:
        """The listener to give kafka-python's `subscribe`."""
        return _Relay(self)

    def run(self, call: Callable[[], Any], wait_s: float | None = None,
            resume: bool = False) -> tuple[bool, Any]:
        """Run `call()` on the worker, serving here the rebalance callbacks it triggers;
        (True, its result), or (False, None) when `wait_s` passed first: the job goes on.

        `resume`: if an earlier job is still running, wait for that one instead of starting
        `call`. Otherwise an earlier job's result is dropped (the caller is closing). A
        callback's exception is raised once the job is done (or the wait is over), inside a
        CallbackError carrying the job's result, so the caller can undo it (rewind the
        records it will not hand out), as the Java client and librdkafka raise it from poll.
        """
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="kafka-python-poll",
                                            daemon=True)
            self._worker.start()
        if self._running is None or not resume:
            self._job += 1
            self._running = self._job
            self._jobs.put((self._job, call))
        job = self._running
        deadline = None if wait_s is None else time.monotonic() + wait_s
        failed: BaseException | None = None
        finished, result = False, None
        while not finished:
            try:
                if deadline is None:
                    item = self._inbox.get()
                else:
                    item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item[0] == _DONE:
                if item[1] != job:
                    continue  # a dropped job's result
                self._running = None
                finished, result, error = True, item[2], item[3]
                if error is not None:
                    raise error
                continue
            _, method, sources, future = item
            try:
                self._call(method, sources)
            except BaseException as exc:  # noqa: BLE001 - raised below, after the wait
                failed = failed or exc
            finally:
                self._wake(future)
        if failed is not None:
            raise CallbackError(result, failed)
        return finished, result

    def stop(self) -> None:
        if self._worker is not None:
            self._jobs.put(_STOP)
            self._worker = None

    def _wake(self, future: Any) -> None:
        """Resolve `future` on the IO loop's thread: its callbacks reschedule the awaiting
        coroutine, which must happen there (and wake the loop's select)."""
        try:
            self._net.call_soon_threadsafe(lambda: future.success(None))
        except Exception as exc:  # noqa: BLE001 - the loop is closed: nobody awaits any more
            log.debug("rebalance callback finished after the IO loop stopped: %s", exc)

    def _call(self, method: str, sources: list[Source]) -> None:
        if self.listener is not None:
            getattr(self.listener, method)(sources)

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is _STOP:
                return
            job, call = item
            try:
                self._inbox.put((_DONE, job, call(), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                self._inbox.put((_DONE, job, None, exc))

    async def hand_over(self, method: str, partitions: Any) -> None:
        """On kafka-python's IO loop: have the caller's thread run one callback (inside its
        current or next poll), and wait, without blocking the loop, until it has."""
        sources = sorted((tp.topic, tp.partition) for tp in partitions)
        if not sources and method != "on_assigned":
            return  # eager rebalancing revokes "nothing" on the first join: not an event
        done = Future()
        self._inbox.put((_CALL, method, sources, done))
        await done


class _Relay(AsyncConsumerRebalanceListener):
    """kafka-python's listener: every event goes to the caller's thread."""

    def __init__(self, bridge: CallerThread) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._bridge.hand_over("on_revoked", revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._bridge.hand_over("on_assigned", assigned)

    async def on_partitions_lost(self, lost: Any) -> None:
        await self._bridge.hand_over("on_lost", lost)
