"""The garbage collector's settings for a long-running scorer process.

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

import gc
from dataclasses import dataclass

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
