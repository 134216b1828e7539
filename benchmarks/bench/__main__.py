"""`python -m benchmarks.bench` runs the benchmark (see benchmarks/bench/runner.py)."""

from __future__ import annotations

import sys

from benchmarks.bench.runner import main

sys.exit(main())
