"""`python -m stream.bench` runs the benchmark (see stream/bench/runner.py)."""

from __future__ import annotations

import sys

from stream.bench.runner import main

sys.exit(main())
