"""Co-partitioned output and the garbage collector policy of the serving process (the
event-time order of consumed records is tested in test_intake.py)."""

from __future__ import annotations

import subprocess
import sys

from stream.serving.handlers import same_partitions


def test_co_partitioned_output_needs_equal_partition_counts() -> None:
    from stream.config import load_settings

    settings = load_settings(environ={}, input_topic="tx", output_topic="verdicts")
    assert same_partitions({"tx": 4, "verdicts": 4}, settings)
    assert not same_partitions({"tx": 4, "verdicts": 2}, settings)
    assert not same_partitions({"verdicts": 4}, settings)


def test_serving_gc_policy_freezes_the_heap_and_raises_thresholds() -> None:
    # In a fresh interpreter: freezing this test process's heap would outlive the test.
    code = (
        "import gc, river\n"
        "from stream.serving.gc_policy import SERVING_THRESHOLDS, tune_for_serving\n"
        "state = tune_for_serving()\n"
        "assert gc.get_threshold() == SERVING_THRESHOLDS, gc.get_threshold()\n"
        "assert state.frozen == gc.get_freeze_count() > 10_000, state\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
