"""A stall that raises nothing is named in the log: input waits, nothing is done, and the
loop says what could be holding it (stream.observability.lag.StallWatch)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import pytest
from loop_support import TX, Clients, TransactionalLog, tx_records
from prometheus_client import CollectorRegistry
from test_loop_budget import LogConsumer, _settings

from stream.assembly import model_version, pipeline_config
from stream.core.pipeline import Pipeline
from stream.kafka.delivery import ExactlyOnce
from stream.kafka.records import Polled, Source
from stream.observability.lag import StallWatch
from stream.observability.metrics import Metrics
from stream.serving.loop import ScorerLoop


class StuckConsumer(LogConsumer):
    """Assigned, five records behind on tx[0], and delivering nothing (as a partition left
    paused at the client does)."""

    def poll(self, max_records: int, timeout_s: float) -> Polled:
        super().poll(0, timeout_s)
        return Polled()

    def lag(self, positions: Mapping[Source, int]) -> dict[Source, int]:
        return {TX: 5}


def _loop(consumer: LogConsumer, after_s: float) -> ScorerLoop:
    settings = _settings(6, 0.0)
    producer = TransactionalLog(set())
    loop = ScorerLoop(settings, Pipeline(pipeline_config(settings), model_version(settings)),
                      Metrics(CollectorRegistry()), Clients(producer),  # type: ignore[arg-type]
                      consumer, ExactlyOnce(lambda: producer, consumer, timeout_s=1.0))
    loop._stall = StallWatch(after_s=after_s)
    started = time.monotonic()  # gauges refresh once a second: two refreshes, then stop
    consumer.on_poll = lambda _: loop.stop() if time.monotonic() - started > 1.5 else None
    return loop


def test_input_that_waits_with_nothing_done_is_reported_with_the_loops_state(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = _loop(StuckConsumer(tx_records(6)), after_s=0.0)
    with caplog.at_level(logging.WARNING, logger="stream.serving"):
        loop.run()
    stalls = [r.getMessage() for r in caplog.records if "nothing done for" in r.getMessage()]
    assert stalls, [r.getMessage() for r in caplog.records]
    assert "5 input records wait (tx[0] 5)" in stalls[0]
    assert "has paused nothing" in stalls[0] and "merchant gate open" in stalls[0]



class AtATransactionalEnd(StuckConsumer):
    """Every partition one offset "behind": its last offset is a commit marker, no record."""

    def lag(self, positions: Mapping[Source, int]) -> dict[Source, int]:
        return {TX: 1, ("labels", 0): 1}


def test_a_commit_marker_at_the_end_of_a_partition_is_not_waiting_input(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = _loop(AtATransactionalEnd(tx_records(6)), after_s=0.0)
    with caplog.at_level(logging.WARNING, logger="stream.serving"):
        loop.run()
    assert not [r for r in caplog.records if "nothing done for" in r.getMessage()]
