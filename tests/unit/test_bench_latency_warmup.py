"""The latency phase's warm-up ends when the broker's JIT has gone quiet, never before its
minimum nor after its maximum; its window's cores are read from /proc."""

from __future__ import annotations

import os
import threading
import time

from benchmarks.bench.latency import CoresUsed, WarmUp
from benchmarks.bench.scorer import compiler_seconds


class FakeJit:
    """A JVM's compiler threads busy at `rate` cores until `quiet_at` seconds, then idle."""

    def __init__(self, rate: float, quiet_at: float) -> None:
        self.rate, self.quiet_at, self.now = rate, quiet_at, 0.0

    def __call__(self) -> float:
        return self.rate * min(self.now, self.quiet_at)


def _ended_at(warm: WarmUp, jit: FakeJit | None, step: float = 0.1) -> float:
    """The first moment, on a grid of `step` seconds, the warm-up says it is over."""
    for k in range(10_000):
        t = round(k * step, 6)
        if jit is not None:
            jit.now = t
        if warm.over(t):
            return t
    raise AssertionError("the warm-up never ended")


def test_the_warm_up_waits_for_a_compiling_broker_then_ends_once_it_is_quiet() -> None:
    jit = FakeJit(rate=0.4, quiet_at=12.0)
    ended = _ended_at(WarmUp(jit, minimum_s=5.0, maximum_s=30.0, window_s=2.0), jit)
    assert 14.0 <= ended <= 15.0  # a quiet 2 s window after 12 s, read every 0.5 s


def test_a_quiet_broker_ends_the_warm_up_at_its_minimum() -> None:
    jit = FakeJit(rate=0.4, quiet_at=0.0)
    assert _ended_at(WarmUp(jit, minimum_s=5.0, maximum_s=30.0), jit) == 5.0


def test_a_broker_that_keeps_compiling_ends_the_warm_up_at_its_maximum() -> None:
    jit = FakeJit(rate=0.4, quiet_at=1e9)
    assert _ended_at(WarmUp(jit, minimum_s=5.0, maximum_s=30.0), jit) == 30.0


def test_without_a_broker_of_our_own_the_minimum_alone_counts() -> None:
    warm = WarmUp(lambda: None, minimum_s=2.0, maximum_s=30.0)
    assert _ended_at(warm, None) == 2.0


def test_a_maximum_below_the_minimum_does_not_cut_the_minimum() -> None:
    jit = FakeJit(rate=0.4, quiet_at=1e9)
    assert _ended_at(WarmUp(jit, minimum_s=5.0, maximum_s=1.0), jit) == 5.0


def test_the_window_reads_the_cores_a_busy_process_used() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    cores = CoresUsed(os.getpid(), None)
    cores.start()
    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.5)
    stop.set()
    spinner.join()
    cores.stop()
    used = cores.result
    assert used["scorer_cores"] is not None and 0.2 < used["scorer_cores"] <= 2.0, used
    assert used["broker_cores"] is None and used["broker_jit_cores"] is None, used
    assert used["machine_busy"] is not None and 0.0 < used["machine_busy"] <= 1.0, used


def test_a_process_without_jit_threads_has_spent_nothing_compiling() -> None:
    assert compiler_seconds(os.getpid()) == 0.0
    assert compiler_seconds(2**22 + 12345) is None  # no such process
