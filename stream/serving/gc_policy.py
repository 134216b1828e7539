"""The garbage collector's settings for a long-running scorer process, and giving the memory a
restore freed back to the operating system (`return_freed_memory`).

Why this exists: CPython's cyclic collector stops the world. Measured on the benchmark
(`stream run`, 100,000 events, at-least-once, gc.callbacks timing every pass), the default
thresholds (700, 10, 10) ran 2,285 collections costing 1.8 s (about a tenth of the run), and
every full (generation 2) pass took 75-100 ms: each one a stall that every event in flight
waits for, and the whole of the p99 latency. Two measures remove most of it:

- `gc.freeze()` once the process is built: the ~120,000 objects of the imported modules
  (River, kafka-python, pydantic, prometheus-client) live as long as the process and hold no
  garbage, so full passes stop re-scanning them;
- larger thresholds: the hot path allocates short-lived objects (records, feature dicts,
  futures) at ~10,000/s, nearly all freed by reference counting; collecting generation 0 every
  700 allocations only re-traverses survivors in flight. Full passes become rare and
  proportional to the live feature state, which reference counting frees on eviction.

What the state grows into still costs: under those thresholds a generation-0 pass ran every
~5,000 events, over the 50,000 objects they had left alive (the feature state, the pending
records, the recent ids), and took 5 to 65 ms as the state grew (in process, 100,000 bench
events, gc.callbacks timing each pass): the longest stalls of the core. `HeapKeeper` moves
what survives into the permanent generation every `FREEZE_EVERY_S`, which no pass scans, so a
pass meets only what the last tenth of a second made. Reference counting still frees every
frozen object that dies; only a reference cycle among frozen objects outlives its death, and
`HeapKeeper` collects the whole heap every `full_every_s` for those (one full pass an hour by
default, logged with what it found: the scorer's state holds none, so a count that grows says
something leaks).

Not applied in-process by tests or library users: only `stream run` calls `tune_for_serving`
and keeps a `HeapKeeper` (the benchmark's `model_only` too, to measure the same process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from stream.config import Settings

# generation 0 every 50,000 net allocations, generation 1 every 20 of those, generation 2
# every 100 of generation 1 (and CPython 3.11 still waits until the objects that survived
# since the last full pass exceed 25% of the long-lived heap).
SERVING_THRESHOLDS = (50_000, 20, 100)
# How often `HeapKeeper` freezes what survived: the checkpoint's own default interval.
FREEZE_EVERY_S = 0.1

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GcState:
    """What `tune_for_serving` changed, for the log and for tests."""

    frozen: int
    thresholds: tuple[int, int, int]


def tune_for_serving(thresholds: tuple[int, int, int] = SERVING_THRESHOLDS) -> GcState:
    """Collect once, move every surviving object to the permanent generation, and raise the
    thresholds. Call after imports and client creation, before the first record."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return GcState(gc.get_freeze_count(), thresholds)


class HeapKeeper:
    """Freezes what survived every `freeze_every_s` and collects the whole heap every
    `full_every_s` (0: never), from the loop's turns: `tick` is cheap when nothing is due
    (`gc.freeze` and `gc.unfreeze` splice lists; only the full pass walks the heap).

    >>> clock = iter([0.0, 0.05, 0.2, 10.0]).__next__
    >>> keeper = HeapKeeper(full_every_s=5.0, clock=clock)
    >>> keeper.tick(), keeper.tick(), keeper.tick()  # nothing due, a freeze, the full pass
    (False, True, True)
    >>> keeper.freezes, keeper.full_passes
    (2, 1)
    >>> gc.unfreeze()  # this doctest's process is not a scorer
    """

    def __init__(self, full_every_s: float = 3600.0, freeze_every_s: float = FREEZE_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every_s = full_every_s
        self.freeze_every_s = freeze_every_s
        self._clock = clock
        now = clock()
        self._next_freeze = now + freeze_every_s
        self._next_full = now + full_every_s if full_every_s > 0 else float("inf")
        self.freezes = 0
        self.full_passes = 0
        self.found = 0  # unreachable objects the full passes found, in all
        self.young_found = 0  # and the passes over the young before each freeze

    def tick(self) -> bool:
        """Freeze (and, when due, first collect everything) if it is time; True if it did."""
        now = self._clock()
        if now < self._next_freeze:
            return False
        self._next_freeze = now + self.freeze_every_s
        if now >= self._next_full:
            self._next_full = now + self.full_every_s
            self._full_pass()
        else:
            # The young first: a cycle that died since the last freeze is collected, not frozen.
            self.young_found += gc.collect(1)
        gc.freeze()
        self.freezes += 1
        return True

    def _full_pass(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        self.full_passes += 1
        self.found += found
        log.info("heap: a full collection found %d unreachable objects in %.0f ms "
                 "(%d in all since the start; %d among the young)", found,
                 (time.perf_counter() - started) * 1000, self.found, self.young_found)


def keeper_for(settings: Settings) -> HeapKeeper | None:
    """`stream run`'s `HeapKeeper`, or None where freezing would leak.

    kafka-python keeps its requests, futures and callbacks in reference cycles: measured
    under a `HeapKeeper` (60,000 events, a full pass every 3 s), each full pass found about
    2,000 unreachable objects a second that had been frozen alive and died later, even with
    the young collected before each freeze; an hourly pass would hold millions. On
    librdkafka the passes found the 221 objects of the start and then none. So the
    kafka-python path keeps the collector's own passes (with `tune_for_serving`'s thresholds).
    """
    if settings.kafka_client == "kafka-python":
        return None
    return HeapKeeper(settings.heap_full_collect_s)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
    return trim  # type: ignore[no-any-return]


def return_freed_memory() -> bool:
    """Give the free pages of the C heap back to the operating system (glibc's
    `malloc_trim(0)`); False where the C library has no such call (musl, macOS).

    Why: a restore reads whole changelog partitions through big fetch buffers, which
    librdkafka allocates on its own threads, in glibc arenas of their own, and folds them
    through temporary objects. Freed afterwards, those pages stay in the arenas, so each
    restore left the process on a higher plateau of resident memory than one that never
    restored (the soak: +100 to +155 MiB). Called after restores, never per event: a trim
    walks the heap (milliseconds).

    >>> isinstance(return_freed_memory(), bool)
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
