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

Not applied in-process by tests or library users: only `stream run` calls `tune_for_serving`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

# generation 0 every 50,000 net allocations, generation 1 every 20 of those, generation 2
# every 100 of generation 1 (and CPython 3.11 still waits until the objects that survived
# since the last full pass exceed 25% of the long-lived heap).
SERVING_THRESHOLDS = (50_000, 20, 100)


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
