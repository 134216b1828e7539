"""How a consumed batch is ordered and filtered before the pipeline sees it, and the garbage
collector policy of the serving process."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from confluent_kafka import KafkaError

from stream.app import _without_errors
from stream.data.kafka_io import InfrastructureError
from stream.records import in_time_order, same_partitions


class Msg:
    """The part of confluent_kafka.Message the loop reads (its fields are methods)."""

    def __init__(self, topic: str, partition: int, offset: int, ts: int,
                 error: KafkaError | None = None) -> None:
        self._t, self._p, self._o, self._ts, self._e = topic, partition, offset, ts, error

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> KafkaError | None:
        return self._e

    def __repr__(self) -> str:
        return f"{self._t}[{self._p}]@{self._o}"


def _ids(records: list[Any]) -> list[str]:
    return [repr(r) for r in records]


def test_labels_and_transactions_merge_by_time_keeping_partition_order() -> None:
    batch = [Msg("tx", 0, 0, 100), Msg("tx", 0, 1, 300), Msg("labels", 0, 0, 200),
             Msg("tx", 1, 0, 150), Msg("tx", 0, 2, 250)]  # offset 2 carries an older time
    ordered = in_time_order(batch)
    assert _ids(ordered) == ["tx[0]@0", "tx[1]@0", "labels[0]@0", "tx[0]@1", "tx[0]@2"]
    # Within one partition the offset order is kept even when timestamps go back.
    assert [r.offset() for r in ordered if (r.topic(), r.partition()) == ("tx", 0)] == [0, 1, 2]


def test_a_single_partition_batch_is_returned_as_is() -> None:
    batch = [Msg("tx", 2, 5, 9), Msg("tx", 2, 6, 1)]
    assert in_time_order(batch) is batch


def test_client_events_are_dropped_and_fatal_ones_raise() -> None:
    ok = Msg("tx", 0, 0, 1)
    eof = Msg("tx", 0, 1, 0, KafkaError(KafkaError._PARTITION_EOF))
    transient = Msg("tx", 1, 0, 0, KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
    assert _without_errors([ok, eof, transient]) == [ok]
    fatal = Msg("tx", 0, 0, 0, KafkaError(KafkaError._FATAL, fatal=True))
    with pytest.raises(InfrastructureError, match="consumer failed"):
        _without_errors([ok, fatal])


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
        "from stream.gc_policy import SERVING_THRESHOLDS, tune_for_serving\n"
        "state = tune_for_serving()\n"
        "assert gc.get_threshold() == SERVING_THRESHOLDS, gc.get_threshold()\n"
        "assert state.frozen == gc.get_freeze_count() > 10_000, state\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
