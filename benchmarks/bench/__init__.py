"""`python -m benchmarks.bench`: the end-to-end benchmark of issue 6, in one run on one broker.

Why one run: the machine is shared and timings are noisy, so every figure (the scorer, the
client-library ceiling, the tutorial loop, the core alone, latency, memory) is measured back to
back against the same pre-filled topic on the same broker, and the ratios between them are what
carry meaning. See docs/benchmark.md for the method and the measured table.

Modules: `harness` (broker, topics, pre-fill), `scorer` (`stream run` in a subprocess, timed),
`baselines` (passthrough, naive, model_only), `latency`, `memory` (bytes per card, in a fresh
subprocess), `report` (table + JSON), `runner` (the command line and the order of phases).
"""

from __future__ import annotations
