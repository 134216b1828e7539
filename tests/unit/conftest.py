"""Hypothesis settings for the unit suite's property-based tests (tests/unit/test_fuzz_*.py).

Bounded and derandomised, so `make test` stays fast and gives the same result on every run
(and writes no example database into the checkout). `HYPOTHESIS_PROFILE=deep` runs many more
examples, with fresh randomness, for a fuzzing session:

    HYPOTHESIS_PROFILE=deep pytest -q tests/unit -k fuzz
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_QUIET)
settings.register_profile("deep", max_examples=5_000, deadline=None, database=None,
                          suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
